"""Scheduling across several hosts, a start retried on another host, HA
restarts, external VMs and affinity groups — through the controller's gRPC
API, on each database engine, with real hostd processes on libvirt's test
driver (each test:///…/node.xml connection is an independent host; a
started VM stops at POWERING_UP there, as nothing boots)."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import grpc
import pytest
from virtplane.v1 import affinity_group_service_pb2 as aff_api
from virtplane.v1 import affinity_group_service_pb2_grpc as aff_grpc
from virtplane.v1 import host_agent_service_pb2 as agent_pb2
from virtplane.v1 import host_agent_service_pb2_grpc as agent_grpc
from virtplane.v1 import host_pb2, vm_pb2
from virtplane.v1 import host_service_pb2 as host_api
from virtplane.v1 import host_service_pb2_grpc as host_grpc
from virtplane.v1 import vm_service_pb2 as vm_api
from virtplane.v1 import vm_service_pb2_grpc as vm_grpc

import virtplane_client as vp
from controller.app import Controller
from controller.ha import HaPolicy
from controller.lifecycle.placement import book_fresh
from controller.lifecycle.target import HostTarget
from controller.scheduler import Policy
from db import repositories as repo
from db.session import Database
from tests.support.controller_rig import admin_channel, config, environment_of
from tests.support.events import vm_until
from tests.support.rig_hosts import add_daemon, start_test_hostd
from tests.support.stack import BIN, Daemon
from tests.support.virt import node_xml
from tests.support.waiting import TIMEOUT, until

H = host_pb2.Host
S = vm_pb2.Vm
WAIT = 30.0  # only reached when something is broken
FAST_HA = HaPolicy(fast_interval=0.5, fast_tries=2, slow_interval=1.0, poll_interval=0.1)


class Api:
    """A controller in this process; raw stubs on it for the verbs whose
    replies and status details this module checks as sent, and a client on
    the same channel for adding hosts, reads and waits."""

    def __init__(self, controller: Controller, channel: grpc.aio.Channel) -> None:
        self.controller = controller
        self.hosts = host_grpc.HostServiceStub(channel)
        self.vms = vm_grpc.VmServiceStub(channel)
        self.groups = aff_grpc.AffinityGroupServiceStub(channel)
        self.client = vp.AsyncClient(channel=channel)  # closed with the channel


async def _host_in(api: Api, ref: str, state: vp.HostState) -> vp.Host:
    """The host once it is in state (hosts have no watch: polled)."""
    return await until(lambda: api.client.hosts.get(ref), lambda h: h.status.state == state)


async def _running(api: Api, ref: str) -> vp.Vm:
    """The VM once its domain runs (POWERING_UP: the test driver boots nothing)."""
    return await api.client.vms.wait_for(ref, vp.VmState.POWERING_UP, timeout=TIMEOUT)


@asynccontextmanager
async def running(database_url: str, **overrides: object) -> AsyncIterator[Api]:
    settings: dict[str, object] = {"reconcile_seconds": 0.3, "ha": FAST_HA, **overrides}
    ctl = Controller(config(database_url, **settings))
    await ctl.start()
    try:
        async with admin_channel(ctl) as channel:
            yield Api(ctl, channel)
    finally:
        await ctl.stop(grace=0)


@pytest.fixture
async def api(database_url: str) -> AsyncIterator[Api]:
    async with running(database_url) as api:
        yield api


@pytest.fixture
def workdir() -> Iterator[Path]:
    """A short directory for hostd: its socket paths must fit in 107 bytes."""
    path = Path(tempfile.mkdtemp(prefix="vp-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


class Hosts:
    """hostd processes on libvirt's test driver, stopped after the test."""

    def __init__(self, workdir: Path) -> None:
        self._workdir = workdir
        self.daemons: list[Daemon] = []

    def start(self, name: str, **node: object) -> Daemon:
        folder = self._workdir / name
        folder.mkdir()
        uri = node_xml(folder / "node.xml", **node)  # type: ignore[arg-type]
        daemon = start_test_hostd(folder, uri)
        self.daemons.append(daemon)
        return daemon


@pytest.fixture
def hostds(workdir: Path) -> Iterator[Hosts]:
    hosts = Hosts(workdir)
    yield hosts
    for daemon in hosts.daemons:
        daemon.stop()


async def create(api: Api, name: str, boot: vm_pb2.BootSource, **spec: object) -> vm_pb2.Vm:
    fields: dict[str, object] = {"vcpus": 1, "memory_mib": 128, "boot": boot, **spec}
    vm_spec = vm_pb2.VmSpec(**fields)  # type: ignore[arg-type]
    return (await api.vms.CreateVm(vm_api.CreateVmRequest(name=name, spec=vm_spec))).vm


async def cli(api: Api, *argv: str) -> str:
    proc = await asyncio.create_subprocess_exec(
        str(BIN / "virtplane"), "--controller", f"127.0.0.1:{api.controller.port}", *argv,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        env=dict(os.environ, **environment_of(api.controller)),
    )  # fmt: skip
    out, _ = await asyncio.wait_for(proc.communicate(), WAIT)
    assert proc.returncode == 0, out.decode()
    return out.decode()


async def test_a_start_that_fails_on_its_host_is_retried_on_another(
    api: Api, hostds: Hosts, boot: vm_pb2.BootSource
) -> None:
    # "bad" has the most free memory, so the scheduler picks it first; a
    # domain of the VM's name is defined there, so libvirt refuses the start.
    bad = await add_daemon(api.client, "bad", hostds.start("bad", memory_mib=8192, clash="v"))
    good = await add_daemon(api.client, "good", hostds.start("good", memory_mib=4096))
    vm = await create(api, "v", boot)
    started = (await api.vms.StartVm(vm_api.StartVmRequest(vm="v"))).vm
    assert started.status.host_id in (bad.id, good.id)

    moved = await _running(api, "v")
    assert moved.status.host_id == good.id
    [tried] = moved.status.start_tries
    assert (tried.host_id, tried.host_name) == (bad.id, "bad")
    assert "already exists" in tried.error
    assert vm.id == moved.id
    shown = await cli(api, "vm", "show", "v")
    assert "tried:   bad: operation failed: domain 'vp-v' already exists" in shown


def _failed(vm: vp.Vm) -> bool:
    return vm.status.state == vp.VmState.DOWN and vm.status.exit_reason != vp.ExitReason.UNSPECIFIED


async def test_a_start_failing_on_every_host_lists_each_try(
    api: Api, hostds: Hosts, boot: vm_pb2.BootSource
) -> None:
    for name, memory in (("bad1", 8192), ("bad2", 6144)):
        await add_daemon(api.client, name, hostds.start(name, memory_mib=memory, clash="v"))
    await create(api, "v", boot)
    await api.vms.StartVm(vm_api.StartVmRequest(vm="v"))

    failed = await vm_until(api.client, "v", _failed, TIMEOUT)
    assert failed.status.exit_reason == vp.ExitReason.START_FAILED
    assert [t.host_name for t in failed.status.start_tries] == ["bad1", "bad2"]
    message = failed.status.message
    assert message.startswith("start failed on 2 host(s): bad1: ")
    # The last placement names each host's rejecting filter: both were tried.
    assert "bad1: tried: this start failed there already" in message
    assert "bad2: tried: this start failed there already" in message

    # Three tries at most, never the same host twice: the three hosts with
    # the most memory refuse w; the others (bad1, bad2) could run it.
    for name, memory in (("bad3", 16384), ("bad4", 15360), ("bad5", 14336)):
        await add_daemon(api.client, name, hostds.start(name, memory_mib=memory, clash="w"))
    await create(api, "w", boot)
    await api.vms.StartVm(vm_api.StartVmRequest(vm="w"))
    failed = await vm_until(api.client, "w", _failed, TIMEOUT)
    assert [t.host_name for t in failed.status.start_tries] == ["bad3", "bad4", "bad5"]
    assert failed.status.message.startswith("start failed on 3 host(s): ")


async def test_a_placement_error_names_each_hosts_rejecting_filter(
    api: Api, hostds: Hosts, boot: vm_pb2.BootSource
) -> None:
    await add_daemon(api.client, "small", hostds.start("small", memory_mib=256))
    await add_daemon(api.client, "narrow", hostds.start("narrow", cpus=1))
    await create(api, "big", boot, vcpus=2, memory_mib=512)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await api.vms.StartVm(vm_api.StartVmRequest(vm="big"))
    assert err.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert err.value.details() == (
        "no host can run VM 'big': narrow: cpus: needs 2 vCPUs, host has 1; "
        "small: memory: needs 512 MiB, 256 MiB free"
    )


async def test_affinity_groups_keep_vms_apart_or_together(
    api: Api, hostds: Hosts, boot: vm_pb2.BootSource
) -> None:
    h1 = await add_daemon(api.client, "h1", hostds.start("h1"))
    h2 = await add_daemon(api.client, "h2", hostds.start("h2"))
    for name in ("a", "b", "c"):
        await create(api, name, boot)
    negative, positive = (
        aff_api.AffinityGroup.POLARITY_NEGATIVE,
        aff_api.AffinityGroup.POLARITY_POSITIVE,
    )
    apart = aff_api.CreateAffinityGroupRequest(
        name="apart", polarity=negative, enforcing=True, vms=["a", "b"]
    )
    group = (await api.groups.CreateAffinityGroup(apart)).group
    assert len(group.vm_ids) == 2
    together = aff_api.CreateAffinityGroupRequest(
        name="together", polarity=positive, enforcing=True, vms=["a", "c"]
    )
    await api.groups.CreateAffinityGroup(together)

    a = (await api.vms.StartVm(vm_api.StartVmRequest(vm="a"))).vm
    b = (await api.vms.StartVm(vm_api.StartVmRequest(vm="b"))).vm
    c = (await api.vms.StartVm(vm_api.StartVmRequest(vm="c"))).vm
    assert {a.status.host_id, b.status.host_id} == {h1.id, h2.id}
    assert c.status.host_id == a.status.host_id
    # ExplainPlacement shows which filter bars a's host to b.
    explained = await api.vms.ExplainPlacement(vm_api.ExplainPlacementRequest(vm="b"))
    [barred] = [h for h in explained.hosts if h.host_id == a.status.host_id]
    assert [(f.filter, f.reason) for f in barred.filters if not f.passed] == [
        ("affinity", "negative group 'apart': another of its VMs runs here")
    ]
    listed = await api.groups.ListAffinityGroups(aff_api.ListAffinityGroupsRequest())
    assert [g.name for g in listed.groups] == ["apart", "together"]
    await api.groups.DeleteAffinityGroup(aff_api.DeleteAffinityGroupRequest(group="apart"))
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await api.groups.GetAffinityGroup(aff_api.GetAffinityGroupRequest(group="apart"))
    assert err.value.code() is grpc.StatusCode.NOT_FOUND


async def test_power_saving_packs_vms_onto_one_host(
    database_url: str, hostds: Hosts, boot: vm_pb2.BootSource
) -> None:
    async with running(database_url, scheduling_policy=Policy.POWER_SAVING) as api:
        await add_daemon(api.client, "h1", hostds.start("h1", memory_mib=4096))
        await add_daemon(api.client, "h2", hostds.start("h2", memory_mib=4096))
        placed = []
        for name in ("a", "b", "c"):
            await create(api, name, boot)
            placed.append((await api.vms.StartVm(vm_api.StartVmRequest(vm=name))).vm)
        [host_id] = {vm.status.host_id for vm in placed}
        assert (await api.client.hosts.get(host_id)).status.vcpus_used == 3
        explained = await api.vms.ExplainPlacement(vm_api.ExplainPlacementRequest(vm="a"))
        assert [w.weight for w in explained.hosts[1].weights] == [
            "memory-used",
            "cpu-used",
            "affinity",
        ]


async def test_a_vm_unknown_to_the_database_is_recorded_as_external(
    api: Api, hostds: Hosts, boot: vm_pb2.BootSource
) -> None:
    daemon = hostds.start("h1")
    host = await add_daemon(api.client, "h1", daemon)
    # Another controller (or a lost database) started a VM on the host.
    stranger = str(uuid.uuid4())
    config = agent_pb2.VmConfig(
        vm_id=stranger, name="stranger", spec=vm_pb2.VmSpec(vcpus=1, memory_mib=64, boot=boot)
    )
    async with daemon.channel() as channel:
        agent = agent_grpc.HostAgentServiceStub(channel)
        await agent.CreateVm(agent_pb2.HostAgentServiceCreateVmRequest(config=config))

        found = await until(lambda: api.vms.ListVms(vm_api.ListVmsRequest()), lambda r: bool(r.vms))
        [vm] = found.vms
        assert vm.id == stranger
        assert vm.status.origin == S.ORIGIN_EXTERNAL
        assert vm.status.host_id == host.id
        assert vm.status.state == S.STATE_POWERING_UP
        # Its size is what libvirt measures (GetVmStats); the test driver
        # measures none.
        assert (vm.spec.vcpus, vm.spec.memory_mib) == (0, 0)
        # It is left running through later reconciliations.
        passes = api.controller.hosts.monitor(host.id).reconciliations
        await until(
            lambda: api.controller.hosts.monitor(host.id).reconciliations,
            lambda n: n >= passes + 2,
        )
        listed = await agent.ListVms(agent_pb2.HostAgentServiceListVmsRequest())
        assert [(v.vm_id, v.state) for v in listed.vms] == [
            (stranger, agent_pb2.HostVm.STATE_RUNNING)
        ]


async def test_ha_vm_restarts_elsewhere_only_once_its_host_is_confirmed_down(
    database_url: str, hostds: Hosts, boot: vm_pb2.BootSource
) -> None:
    # The first controller would restart nothing for an hour: the restart
    # must survive it and be carried out by the next one.
    slow = HaPolicy(fast_interval=0.5, fast_tries=2, slow_interval=1.0, poll_interval=3600)
    async with running(database_url, ha=slow) as api:
        first = hostds.start("h1", memory_mib=8192)
        h1 = await add_daemon(api.client, "h1", first)
        await create(api, "ha", boot, highly_available=True)
        await create(api, "plain", boot)
        for name in ("ha", "plain"):
            await api.vms.StartVm(vm_api.StartVmRequest(vm=name))
            vm = await _running(api, name)
            assert vm.status.host_id == h1.id
        h2 = await add_daemon(api.client, "h2", hostds.start("h2", memory_mib=4096))

        first.kill()
        await _host_in(api, "h1", vp.HostState.NON_RESPONSIVE)
        for name in ("ha", "plain"):
            lost = await api.client.vms.get(name)
            assert lost.status.state == vp.VmState.UNKNOWN  # never DOWN, never moved
            assert lost.status.host_id == h1.id

        await api.hosts.ConfirmHostDown(host_api.ConfirmHostDownRequest(host="h1"))
        fenced = await api.client.vms.get("ha")
        assert fenced.status.state == vp.VmState.DOWN
        assert fenced.status.exit_reason == vp.ExitReason.HOST_FENCED
        assert fenced.status.ha_restart_time is not None

    async with running(database_url) as api:
        restarted = await _running(api, "ha")
        assert restarted.status.host_id == h2.id
        assert restarted.status.ha_restart_count == 1
        plain = await api.client.vms.get("plain")
        assert plain.status.state == vp.VmState.DOWN  # not highly available
        assert plain.status.ha_restart_time is None


async def test_a_stopped_ha_vm_is_not_restarted(
    api: Api, hostds: Hosts, boot: vm_pb2.BootSource
) -> None:
    await add_daemon(api.client, "h1", hostds.start("h1"))
    await create(api, "ha", boot, highly_available=True)
    await api.vms.StartVm(vm_api.StartVmRequest(vm="ha"))
    await _running(api, "ha")
    stopped = (await api.vms.StopVm(vm_api.StopVmRequest(vm="ha"))).vm
    assert stopped.status.exit_reason == S.EXIT_REASON_USER_STOP
    await asyncio.sleep(FAST_HA.poll_interval * 5)
    again = await api.client.vms.get("ha")
    assert again.status.state == vp.VmState.DOWN
    assert again.status.ha_restart_time is None


def _book(database_url: str, vm: str) -> HostTarget:
    """What a controller killed right after booking leaves: the VM booked
    on a host (WAIT_FOR_LAUNCH, with the key of its create), nothing sent."""
    database = Database(database_url)
    try:
        return database.transaction(
            lambda s: book_fresh(s, repo.find_vm(s, vm), Policy.EVEN_SPREAD, automatic=False)  # type: ignore[arg-type]
        )
    finally:
        database.close()


@pytest.mark.parametrize("sent", [False, True], ids=["booked", "sent"])
async def test_a_start_booked_by_a_dead_controller_is_resumed_once(
    database_url: str, hostds: Hosts, boot: vm_pb2.BootSource, sent: bool
) -> None:
    daemon = hostds.start("h1")
    async with running(database_url) as api:
        host = await add_daemon(api.client, "h1", daemon)
        await create(api, "v", boot)
    dispatch = _book(database_url, "v")
    async with daemon.channel() as channel:
        agent = agent_grpc.HostAgentServiceStub(channel)
        if sent:  # the create reached the host; its answer was lost
            await agent.CreateVm(
                agent_pb2.HostAgentServiceCreateVmRequest(
                    config=dispatch.config, request_id=dispatch.request_id
                )
            )
        async with running(database_url) as api:
            vm = await _running(api, "v")
            assert vm.status.host_id == host.id
        listed = await agent.ListVms(agent_pb2.HostAgentServiceListVmsRequest())
        assert [v.vm_id for v in listed.vms] == [vm.id]


async def test_a_host_that_stops_answering_is_non_responsive_then_says_what_is_true(
    database_url: str, hostds: Hosts, boot: vm_pb2.BootSource
) -> None:
    daemon = hostds.start("h1")
    async with running(database_url, host_call_timeout=2.0) as api:
        host = await add_daemon(api.client, "h1", daemon)
        await create(api, "v", boot)
        await api.vms.StartVm(vm_api.StartVmRequest(vm="v"))
        await _running(api, "v")

        # hostd hangs: its process is there, its socket open, and nothing
        # answers — only the channel's keepalive pings notice.
        daemon.process.send_signal(signal.SIGSTOP)
        try:
            lost = await _host_in(api, "h1", vp.HostState.NON_RESPONSIVE)
            assert lost.status.message
            vm = await api.client.vms.get("v")
            assert (vm.status.state, vm.status.host_id) == (vp.VmState.UNKNOWN, host.id)
        finally:
            daemon.process.send_signal(signal.SIGCONT)
        await _host_in(api, "h1", vp.HostState.UP)
        back = await _running(api, "v")
        assert back.status.host_id == host.id
