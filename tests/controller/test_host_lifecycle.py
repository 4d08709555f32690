"""The host verbs — RemoveHost, SetHostMaintenance, ActivateHost,
ConfirmHostDown — and ExplainPlacement, through the controller's gRPC API,
on each database engine, with a real hostd on libvirt's test driver (a
started VM stays POWERING_UP there: nothing boots)."""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from virtplane.v1 import host_pb2, vm_pb2
from virtplane.v1 import host_service_pb2 as host_api
from virtplane.v1 import host_service_pb2_grpc as host_grpc
from virtplane.v1 import vm_service_pb2 as vm_api
from virtplane.v1 import vm_service_pb2_grpc as vm_grpc

import virtplane_client as vp
from controller.app import Controller
from db.enums import HostState
from tests.support.controller_rig import admin_channel, config, environment_of, error
from tests.support.rig_hosts import next_host_id, start_test_hostd
from tests.support.stack import BIN, Daemon, free_port
from tests.support.waiting import TIMEOUT, until

H = host_pb2.Host
WAIT = 30.0  # only reached when something is broken


@dataclass
class Api:
    """A controller in this process; raw stubs on it for the verbs (this module
    checks their status codes and messages on the wire), and a client on the
    same channel for waits and reads."""

    controller: Controller
    hosts: host_grpc.HostServiceAsyncStub
    vms: vm_grpc.VmServiceAsyncStub
    address: str
    client: vp.AsyncClient


@pytest.fixture
async def api(database_url: str) -> AsyncIterator[Api]:
    ctl = Controller(config(database_url))
    await ctl.start()
    address = f"127.0.0.1:{ctl.port}"
    async with admin_channel(ctl) as channel:
        yield Api(
            ctl,
            host_grpc.HostServiceStub(channel),
            vm_grpc.VmServiceStub(channel),
            address,
            vp.AsyncClient(channel=channel),
        )
    await ctl.stop(grace=0)


@pytest.fixture
def workdir() -> Iterator[Path]:
    """A short directory for hostd: its socket paths must fit in 107 bytes."""
    path = Path(tempfile.mkdtemp(prefix="vp-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


async def _started_vm(api: Api, name: str, boot: vm_pb2.BootSource) -> vp.Vm:
    spec = vm_pb2.VmSpec(vcpus=1, memory_mib=128, boot=boot)
    await api.vms.CreateVm(vm_api.CreateVmRequest(name=name, spec=spec))
    await api.vms.StartVm(vm_api.StartVmRequest(vm=name))
    return await api.client.vms.wait_for(name, vp.VmState.POWERING_UP, timeout=TIMEOUT)


async def _host_in(api: Api, state: vp.HostState) -> vp.Host:
    """Host h1 once it is in state (hosts have no watch: polled)."""
    return await until(lambda: api.client.hosts.get("h1"), lambda h: h.status.state == state)


async def test_a_non_responsive_host_confirmed_down_frees_its_vms(
    api: Api, workdir: Path, boot: vm_pb2.BootSource
) -> None:
    port = free_port()
    for name in ("h1", "h1-again"):
        (workdir / name).mkdir()
    hostd = start_test_hostd(workdir / "h1", port=port)
    try:
        with next_host_id(hostd.host_id):
            host = (
                await api.hosts.AddHost(host_api.AddHostRequest(name="h1", address=hostd.address))
            ).host
        vm = await _started_vm(api, "v1", boot)
        assert vm.status.host_id == host.id

        code, why = await error(
            api.hosts.ConfirmHostDown(host_api.ConfirmHostDownRequest(host="h1"))
        )
        assert code is grpc.StatusCode.FAILED_PRECONDITION
        assert "it is UP" in why

        hostd.kill()
        await _host_in(api, vp.HostState.NON_RESPONSIVE)
        lost = await api.client.vms.get("v1")
        assert lost.status.state == vp.VmState.UNKNOWN  # never DOWN on its own
        code, why = await error(api.hosts.RemoveHost(host_api.RemoveHostRequest(host="h1")))
        assert code is grpc.StatusCode.FAILED_PRECONDITION
        assert "v1" in why
        code, _ = await error(api.vms.StartVm(vm_api.StartVmRequest(vm="v1")))
        assert code is grpc.StatusCode.FAILED_PRECONDITION  # UNKNOWN, not DOWN

        reply = await api.hosts.ConfirmHostDown(host_api.ConfirmHostDownRequest(host="h1"))
        assert reply.host.status.state == H.STATE_DOWN
        assert list(reply.vm_ids) == [vm.id]
        fenced = await api.client.vms.get("v1")
        assert fenced.status.state == vp.VmState.DOWN
        assert fenced.status.exit_reason == vp.ExitReason.HOST_FENCED
        assert fenced.status.host_id == ""
        assert "confirmed down" in fenced.status.message
        code, why = await error(
            api.hosts.ConfirmHostDown(host_api.ConfirmHostDownRequest(host="h1"))
        )
        assert code is grpc.StatusCode.FAILED_PRECONDITION
        assert "it is DOWN" in why

        # The rebooted host's hostd answers again: the host is UP and takes VMs.
        hostd = start_test_hostd(workdir / "h1-again", port=port, host_id=host.id)
        await _host_in(api, vp.HostState.UP)
        again = (await api.vms.StartVm(vm_api.StartVmRequest(vm="v1"))).vm
        assert again.status.host_id == host.id
    finally:
        hostd.stop()


async def _cli(api: Api, *argv: str) -> str:
    proc = await asyncio.create_subprocess_exec(
        str(BIN / "virtplane"),
        "--controller",
        api.address,
        *argv,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env=dict(os.environ, **environment_of(api.controller)),
    )
    out, _ = await asyncio.wait_for(proc.communicate(), WAIT)
    assert proc.returncode == 0, out.decode()
    return out.decode()


@pytest.fixture
def hostd(workdir: Path) -> Iterator[Daemon]:
    daemon = start_test_hostd(workdir)
    yield daemon
    daemon.stop()


async def _placed_on_h1(api: Api, host: host_pb2.Host, up: vp.Host) -> None:
    explained = await api.vms.ExplainPlacement(vm_api.ExplainPlacementRequest(vm="v2"))
    assert (explained.chosen_host_id, explained.chosen_host_name) == (host.id, "h1")
    [judged] = explained.hosts
    assert judged.eligible
    assert all(f.passed and not f.reason for f in judged.filters)
    assert [w.weight for w in judged.weights] == ["memory-free", "cpu-free", "affinity"]
    free_after = up.status.memory_free_mib - 64  # v2 asks for 64 MiB
    assert judged.weights[0].score == pytest.approx(free_after / up.status.memory_total_mib)


async def _prepared_then_activated(api: Api, host: host_pb2.Host) -> None:
    """v1 runs on h1: the host prepares for maintenance and says v1 cannot
    move (the test driver's VM never comes UP); ActivateHost cancels that."""
    maintain = host_api.SetHostMaintenanceRequest(host="h1")
    preparing = (await api.hosts.SetHostMaintenance(maintain)).host
    assert preparing.status.state == H.STATE_PREPARING_FOR_MAINTENANCE
    assert api.controller.hosts.watched(host.id)
    named = await until(
        lambda: api.client.hosts.get("h1"), lambda h: "cannot move" in h.status.message
    )
    stuck = "evacuating: 0 VMs moving; cannot move: v1 (it is POWERING_UP; only an UP VM migrates)"
    assert named.status.message == stuck
    # The CLI shows the evacuation until only VMs that cannot move are left.
    shown = await _cli(api, "host", "maintenance", "h1")
    assert f"h1: stays PREPARING_FOR_MAINTENANCE: {stuck}" in shown
    code, why = await error(api.vms.StartVm(vm_api.StartVmRequest(vm="v2")))
    assert code is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "h1: maintenance: host is in maintenance" in why
    activated = (await api.hosts.ActivateHost(host_api.ActivateHostRequest(host="h1"))).host
    assert activated.status.state == H.STATE_UP
    assert activated.status.message == "activated; the evacuation was cancelled"


async def test_maintenance_activate_and_remove(
    api: Api, hostd: Daemon, boot: vm_pb2.BootSource
) -> None:
    with next_host_id(hostd.host_id):
        request = host_api.AddHostRequest(name="h1", address=hostd.address)
        host = (await api.hosts.AddHost(request)).host
    await _started_vm(api, "v1", boot)
    await api.vms.CreateVm(
        vm_api.CreateVmRequest(name="v2", spec=vm_pb2.VmSpec(vcpus=1, memory_mib=64, boot=boot))
    )

    await _prepared_then_activated(api, host)
    code, why = await error(api.hosts.RemoveHost(host_api.RemoveHostRequest(host="h1")))
    assert code is grpc.StatusCode.FAILED_PRECONDITION
    assert "v1" in why
    await api.vms.StopVm(vm_api.StopVmRequest(vm="v1"))

    assert "h1" in await _cli(api, "host", "maintenance", "h1")
    assert (await api.client.hosts.get("h1")).status.state == vp.HostState.MAINTENANCE
    assert not api.controller.hosts.watched(host.id)
    code, why = await error(api.vms.StartVm(vm_api.StartVmRequest(vm="v2")))
    assert code is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "h1: maintenance: host is in maintenance" in why
    explained = await api.vms.ExplainPlacement(vm_api.ExplainPlacementRequest(vm="v2"))
    assert explained.chosen_host_id == ""
    [judged] = explained.hosts
    assert not judged.eligible
    assert [(f.filter, f.passed) for f in judged.filters] == [
        ("source", True),
        ("tried", True),
        ("maintenance", False),
        ("host-up", False),
        ("pinned-host", True),
        ("memory", True),
        ("cpus", True),
        ("affinity", True),
    ]
    assert list(judged.weights) == []

    activated = (await api.hosts.ActivateHost(host_api.ActivateHostRequest(host="h1"))).host
    assert activated.status.state == H.STATE_CONNECTING
    up = await _host_in(api, vp.HostState.UP)
    code, why = await error(api.hosts.ActivateHost(host_api.ActivateHostRequest(host="h1")))
    assert code is grpc.StatusCode.FAILED_PRECONDITION
    assert "it is UP" in why

    await _placed_on_h1(api, host, up)
    assert "chosen: h1" in await _cli(api, "vm", "explain", "v2")

    assert "removed" in await _cli(api, "host", "remove", "h1")
    assert list((await api.hosts.ListHosts(host_api.ListHostsRequest())).hosts) == []
    assert not api.controller.hosts.watched(host.id)
    code, _ = await error(api.hosts.GetHost(host_api.GetHostRequest(host="h1")))
    assert code is grpc.StatusCode.NOT_FOUND
    code, why = await error(api.vms.StartVm(vm_api.StartVmRequest(vm="v2")))
    assert code is grpc.StatusCode.RESOURCE_EXHAUSTED


async def test_a_host_in_maintenance_stays_unwatched_across_a_controller_restart(
    database_url: str, hostd: Daemon
) -> None:
    settings = config(database_url)
    first = Controller(settings)
    await first.start()
    try:
        with next_host_id(hostd.host_id):
            host = await first.hosts.add("h1", hostd.address)
        await first.hosts.set_maintenance("h1")
    finally:
        await first.stop(grace=0)

    second = Controller(settings)
    await second.start()
    try:
        assert (await second.hosts.get("h1")).row.state == HostState.MAINTENANCE
        assert not second.hosts.watched(host.id)
        await second.hosts.activate("h1")
        assert second.hosts.watched(host.id)
        await until(lambda: second.hosts.get("h1"), lambda h: h.row.state == HostState.UP)
    finally:
        await second.stop(grace=0)
