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
import dataclasses
import datetime as dt
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

import virtplane_client as vp
from tests.support.guests import WAIT, Api, guest_reported, guest_spec
from tests.support.real import REPO, GuestImage
from tests.support.stack import Stack
from tests.support.waiting import until

pytestmark = pytest.mark.guest
Agent = vp.AgentState
CHAOS_UP, CHAOS_DOWN = 30, 15
"""guestd is killed 30 s after each start and kept down 15 s."""


def _at(time: dt.datetime | None) -> float:
    """A time in seconds since the epoch; 0 when it is not set."""
    return time.timestamp() if time is not None else 0.0


@pytest.fixture(scope="module")
async def chaos_vm(api: Api, guest_image: GuestImage) -> AsyncIterator[str]:
    """Started here and left to boot while other fixtures wait on theirs."""
    spec = guest_spec(guest_image)
    chaos = f" virtplane.heartbeat=1 virtplane.chaos={CHAOS_UP}:{CHAOS_DOWN}"
    spec = dataclasses.replace(
        spec, boot=dataclasses.replace(spec.boot, cmdline=spec.boot.cmdline + chaos)
    )
    created = await api.client.vms.create(f"chaos-{os.getpid()}", spec)
    await api.client.vms.start(created.id)
    yield created.id
    with contextlib.suppress(vp.ClientError):
        await api.client.vms.stop(created.id)
    with contextlib.suppress(vp.ClientError):
        await api.client.vms.delete(created.id)


async def _full_report_since(api: Api, vm_id: str, asked: float) -> vp.GuestReport:
    """The VM's guest report (with the raw one) once it holds a full report
    received at asked or later, at hostd and at the controller."""
    latest: list[vp.GuestReport] = []

    async def refreshed() -> bool:
        reply = await api.client.vms.guest_report(vm_id, raw=True)
        latest[:] = [reply]
        raw = reply.raw_report
        # The raw report is hostd's; the facts are what the controller stored
        # from hostd's event of it, which may follow a moment later.
        facts = {f.name: f for f in reply.facts}
        return (
            raw is not None
            and _at(raw.received_time) >= asked
            and bool(json.loads(raw.report_json)["report"].get("full"))
            and "hostname" in facts
            and _at(facts["hostname"].received_time) >= asked
        )

    await until(refreshed, what="a full report after the refresh", within=WAIT, every=0.2)
    return latest[0]


async def _cli_guest_raw(stack: Stack, vm_id: str) -> subprocess.CompletedProcess[str]:
    """`virtplane vm guest VM --raw` on the stack's controller."""
    return await asyncio.to_thread(
        subprocess.run,
        [str(Path(sys.executable).parent / "virtplane"), "vm", "guest", vm_id, "--raw"],
        env=dict(os.environ, **stack.controller.environment()),
        capture_output=True,
        text=True,
        timeout=60,
    )


async def _check_a_vm_that_runs_nowhere(api: Api, guest_image: GuestImage) -> None:
    """A VM that runs nowhere has no raw report, and says why; a refresh of it
    is refused."""
    created = await api.client.vms.create("never-started", guest_spec(guest_image))
    try:
        down = await api.client.vms.guest_report(created.id, raw=True)
        assert down.raw_report is not None
        assert "runs on no host" in down.raw_report.unavailable_reason
        with pytest.raises(vp.RpcError) as refused:
            await api.client.vms.refresh_guest_report(created.id)
        assert refused.value.code == grpc.StatusCode.FAILED_PRECONDITION
    finally:
        await api.client.vms.delete(created.id)


async def test_a_refresh_brings_a_full_report_and_the_raw_report_shows_it(
    api: Api, chaos_vm: str, up_vm: vp.Vm, stack: Stack, guest_image: GuestImage
) -> None:
    asked = time.time()
    await api.client.vms.refresh_guest_report(up_vm.id)
    reply = await _full_report_since(api, up_vm.id, asked)
    assert reply.raw_report is not None and reply.guest is not None
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
    assert _at(facts["hostname"].received_time) >= asked
    assert facts["hostname"].source == "guestd"

    # the CLI shows the same
    cli = await _cli_guest_raw(stack, up_vm.id)
    assert cli.returncode == 0, cli.stderr
    assert json.loads(cli.stdout)["report"]["system"]["hostname"] == guest.hostname
    assert f"by host {api.host_id}" in cli.stderr

    await _check_a_vm_that_runs_nowhere(api, guest_image)


async def _next(
    api: Api, vm_id: str, start: int, what: str, check: Callable[[vp.Vm], bool]
) -> tuple[int, vp.Vm]:
    return await api.watch.next_vm(vm_id, check, what, start, WAIT + CHAOS_UP + CHAOS_DOWN)


def _agent(vm: vp.Vm) -> Agent:
    return vm.status.guest.agent_state if vm.status.guest else Agent.UNSPECIFIED


async def test_a_killed_agent_goes_stale_then_fresh_when_it_restarts(
    api: Api, chaos_vm: str
) -> None:
    def responding(vm: vp.Vm) -> bool:
        return guest_reported(vm) and _agent(vm) == Agent.RESPONDING

    def silent(vm: vp.Vm) -> bool:
        return _agent(vm) == Agent.NOT_RESPONDING

    at, fresh = await _next(api, chaos_vm, 0, "the agent's first report", responding)
    at, stale = await _next(api, chaos_vm, at, "the killed agent to go NOT_RESPONDING", silent)
    # the facts are kept as last observed: never blanked
    kept, before = stale.status.guest, fresh.status.guest
    assert kept is not None and before is not None
    assert kept.interfaces == before.interfaces
    assert (kept.os_name, kept.hostname, kept.application_count) == (
        before.os_name,
        before.hostname,
        before.application_count,
    )
    assert _at(kept.observed_time) >= _at(before.observed_time)
    assert stale.status.state == vp.VmState.UP  # the VM runs; only its agent is silent
    assert 0 < kept.memory_free_kib < kept.memory_total_kib  # from its last heartbeat
    # GetVmGuestInfo tells the same while it lasts, each fact with when it was observed
    info = await api.client.vms.guest_report(chaos_vm)
    if info.guest is not None and info.guest.agent_state == Agent.NOT_RESPONDING:
        facts = {f.name: f for f in info.facts}
        assert facts["hostname"].observed_time == kept.observed_time
        assert facts["hostname"].stale
        assert json.loads(facts["agent"].value_json)["state"] == "NOT_RESPONDING"
        assert info.guest.os_name == kept.os_name

    def observed_again(vm: vp.Vm) -> bool:
        observed = _at(vm.status.guest.observed_time) if vm.status.guest else 0.0
        return responding(vm) and observed > _at(kept.observed_time)

    # RESPONDING again with its first full report
    at, back = await _next(api, chaos_vm, at, "the restarted agent's report", observed_again)
    assert back.status.guest is not None
    assert back.status.guest.os_name == kept.os_name
    silent_for = _at(back.status.guest.last_heard_time) - _at(kept.last_heard_time)
    print(f"\nchaos: agent silent {silent_for:.1f} s (kept down {CHAOS_DOWN} s), then fresh")
