"""The guest agent through the whole stack, on real guests: a refresh asked of
the controller brings a full report; the raw last report is there for
debugging; an agent killed inside its guest goes NOT_RESPONDING with its
facts kept (stale, never blanked), then fresh again when it restarts.

Two guests boot together: the session's shared one, and one whose /init
kills guestd now and then (`virtplane.chaos=UP:DOWN`, tools/guest-image/init)
and whose agent beats every second (`virtplane.heartbeat=1`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import time
import tomllib
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import grpc
import pytest
from virtplane.v1 import vm_pb2
from virtplane.v1 import vm_service_pb2 as vm_api

from tests.support.guests import WAIT, Api, reported, vm_spec
from tests.support.real import REPO, GuestImage
from tests.support.stack import Stack
from tests.support.waiting import until

pytestmark = pytest.mark.guest
Agent = vm_pb2.GuestInfo.AgentState
CHAOS_UP, CHAOS_DOWN = 30, 15
"""guestd is killed 30 s after each start and kept down 15 s."""


@pytest.fixture(scope="module")
async def chaos_vm(api: Api, guest_image: GuestImage) -> AsyncIterator[str]:
    """Started here and left to boot while other fixtures wait on theirs."""
    spec = vm_spec(guest_image)
    spec.boot.cmdline += f" virtplane.heartbeat=1 virtplane.chaos={CHAOS_UP}:{CHAOS_DOWN}"
    created = await api.vms.CreateVm(vm_api.CreateVmRequest(name=f"chaos-{os.getpid()}", spec=spec))
    await api.vms.StartVm(vm_api.StartVmRequest(vm=created.vm.id))
    yield created.vm.id
    with contextlib.suppress(grpc.aio.AioRpcError):
        await api.vms.StopVm(vm_api.StopVmRequest(vm=created.vm.id))
    with contextlib.suppress(grpc.aio.AioRpcError):
        await api.vms.DeleteVm(vm_api.DeleteVmRequest(vm=created.vm.id))


async def test_a_refresh_brings_a_full_report_and_the_raw_report_shows_it(
    api: Api, chaos_vm: str, up_vm: vm_pb2.Vm, stack: Stack, guest_image: GuestImage
) -> None:
    asked = time.time()
    await api.vms.RefreshVmGuestInfo(vm_api.RefreshVmGuestInfoRequest(vm=up_vm.id))
    latest: list[vm_api.GetVmGuestInfoResponse] = []

    async def refreshed() -> bool:
        reply = await api.vms.GetVmGuestInfo(
            vm_api.GetVmGuestInfoRequest(vm=up_vm.id, include_raw_report=True)
        )
        latest[:] = [reply]
        raw = reply.raw_report
        return raw.received_time.ToNanoseconds() / 1e9 >= asked and bool(
            json.loads(raw.report_json)["report"].get("full")
        )

    await until(refreshed, what="a full report after the refresh", within=WAIT, every=0.2)
    reply = latest[0]
    raw = json.loads(reply.raw_report.report_json)["report"]
    # every section, as the agent sent it
    assert {"system", "os", "network", "applications", "users", "filesystems"} <= set(raw)
    assert raw["os"]["kernelRelease"] == reply.guest.kernel_release
    assert reply.raw_report.host_id == api.host_id and not reply.raw_report.truncated
    # the rest of what guestd reports reached the controller
    guest = reply.guest
    assert guest.fqdn.startswith(guest.hostname) and guest.hostname
    assert guest.timezone == "UTC"  # the test image has no /etc/localtime
    assert guest.cpus == 1 and guest.architecture == "x86_64"
    assert guest.memory_total_kib > 0  # free memory comes with heartbeats (below)
    assert "/" in [f.mount_point for f in guest.filesystems]
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert guest.agent_version == project["version"]
    # the controller stored what the full report said
    facts = {f.name: f for f in reply.facts}
    assert facts["hostname"].received_time.ToNanoseconds() / 1e9 >= asked
    assert facts["hostname"].source == "guestd"

    # the CLI shows the same
    cli = await asyncio.to_thread(
        subprocess.run,
        [str(Path(sys.executable).parent / "virtplane"), "vm", "guest", up_vm.id, "--raw"],
        env=dict(os.environ, VIRTPLANE_CONTROLLER=stack.controller.address),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert cli.returncode == 0, cli.stderr
    assert json.loads(cli.stdout)["report"]["system"]["hostname"] == reply.guest.hostname
    assert f"by host {api.host_id}" in cli.stderr

    # a VM that runs nowhere has no raw report, and says why
    created = await api.vms.CreateVm(
        vm_api.CreateVmRequest(name="never-started", spec=vm_spec(guest_image))
    )
    try:
        down = await api.vms.GetVmGuestInfo(
            vm_api.GetVmGuestInfoRequest(vm=created.vm.id, include_raw_report=True)
        )
        assert "runs on no host" in down.raw_report.unavailable_reason
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await api.vms.RefreshVmGuestInfo(vm_api.RefreshVmGuestInfoRequest(vm=created.vm.id))
        assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    finally:
        await api.vms.DeleteVm(vm_api.DeleteVmRequest(vm=created.vm.id))


async def _next(
    api: Api, vm_id: str, start: int, what: str, check: Callable[[vm_pb2.Vm], bool]
) -> tuple[int, vm_pb2.Vm]:
    return await api.watch.next_vm(vm_id, check, what, start, WAIT + CHAOS_UP + CHAOS_DOWN)


async def test_a_killed_agent_goes_stale_then_fresh_when_it_restarts(
    api: Api, chaos_vm: str
) -> None:
    def responding(vm: vm_pb2.Vm) -> bool:
        return reported(vm) and vm.status.guest.agent_state == Agent.AGENT_STATE_RESPONDING

    def silent(vm: vm_pb2.Vm) -> bool:
        return vm.status.guest.agent_state == Agent.AGENT_STATE_NOT_RESPONDING

    at, fresh = await _next(api, chaos_vm, 0, "the agent's first report", responding)
    at, stale = await _next(api, chaos_vm, at, "the killed agent to go NOT_RESPONDING", silent)
    # the facts are kept as last observed: never blanked
    kept, before = stale.status.guest, fresh.status.guest
    assert kept.interfaces == before.interfaces
    assert (kept.os_name, kept.hostname, kept.application_count) == (
        before.os_name,
        before.hostname,
        before.application_count,
    )
    assert kept.observed_time.ToNanoseconds() >= before.observed_time.ToNanoseconds()
    assert stale.status.state == vm_pb2.Vm.STATE_UP  # the VM runs; only its agent is silent
    assert 0 < kept.memory_free_kib < kept.memory_total_kib  # from its last heartbeat
    # GetVmGuestInfo tells the same while it lasts, each fact with when it was observed
    info = await api.vms.GetVmGuestInfo(vm_api.GetVmGuestInfoRequest(vm=chaos_vm))
    if info.guest.agent_state == Agent.AGENT_STATE_NOT_RESPONDING:
        facts = {f.name: f for f in info.facts}
        assert facts["hostname"].observed_time == kept.observed_time
        assert facts["hostname"].stale
        assert json.loads(facts["agent"].value_json)["state"] == "NOT_RESPONDING"
        assert info.guest.os_name == kept.os_name

    def observed_again(vm: vm_pb2.Vm) -> bool:
        observed = vm.status.guest.observed_time.ToNanoseconds()
        return responding(vm) and observed > kept.observed_time.ToNanoseconds()

    # RESPONDING again with its first full report
    at, back = await _next(api, chaos_vm, at, "the restarted agent's report", observed_again)
    assert back.status.guest.os_name == kept.os_name
    silent_for = (
        back.status.guest.last_heard_time.ToNanoseconds() - kept.last_heard_time.ToNanoseconds()
    ) / 1e9
    print(f"\nchaos: agent silent {silent_for:.1f} s (kept down {CHAOS_DOWN} s), then fresh")
