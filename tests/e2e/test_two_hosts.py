"""Starts racing each other, a controller killed mid-start, HA failover, and a
VM its hosts migrate, with real guests: a controller (a process, or two) and
two real hosts — a hostd on qemu:///system, and a hostd on a second libvirtd
on this machine (the second_libvirt fixture; hostd/README.md, "Two hosts on
one machine").
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import grpc
import libvirt
import pytest
from virtplane.v1 import host_agent_service_pb2 as agent_pb2
from virtplane.v1 import host_agent_service_pb2_grpc as agent_grpc
from virtplane.v1 import host_pb2, vm_pb2
from virtplane.v1 import host_service_pb2 as host_api
from virtplane.v1 import vm_service_pb2 as vm_api

from controller.app import Controller
from controller.config import ControllerConfig
from controller.ha import HaPolicy
from hostd.builder import DOMAIN_NAME_PREFIX
from tests.support.guests import Client, reported, vm_spec
from tests.support.real import GuestImage
from tests.support.stack import Daemon, start_controller, start_hostd
from tests.support.virt import remove_domains
from tests.support.waiting import until

S = vm_pb2.Vm
H = host_pb2.Host
pytestmark = pytest.mark.guest
WAIT = 180.0  # guests may take 40 s to boot on a loaded machine
# Domain names are per libvirtd, which other test runs on this machine share.
_RUN = os.getpid()
RACER, KILLED, HA, CRASHY = (f"{n}-{_RUN}" for n in ("racer", "killed", "ha", "crashy"))


@pytest.fixture
def workdir() -> Iterator[Path]:
    """Short paths (unix sockets), traversable by QEMU."""
    path = Path(tempfile.mkdtemp(prefix="vp-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def hosts(workdir: Path, system_libvirt: str, second_libvirt: str) -> Iterator[list[Daemon]]:
    daemons: list[Daemon] = []
    try:
        for name, uri in (("h1", system_libvirt), ("h2", second_libvirt)):
            (workdir / name).mkdir()
            (workdir / name).chmod(0o755)
            daemons.append(start_hostd(workdir / name, uri))
        yield daemons
    finally:
        for daemon in daemons:
            daemon.stop()
        _destroy_all(second_libvirt)  # whatever a test left on the second host


def _destroy_all(uri: str) -> None:
    conn = libvirt.open(uri)
    try:
        vm_ids = [dom.UUIDString() for dom in conn.listAllDomains()]
    finally:
        conn.close()
    remove_domains(uri, vm_ids)


def domains_of(uri: str, vm_id: str) -> int:
    """How many domains libvirt at uri has for the VM (running or not)."""
    conn = libvirt.open(uri)
    try:
        return sum(1 for d in conn.listAllDomains() if d.UUIDString() == vm_id)
    finally:
        conn.close()


async def running_on(daemon: Daemon, vm_id: str) -> int:
    """How many running VMs of this id a hostd reports."""
    async with grpc.aio.insecure_channel(daemon.address) as channel:
        agent = agent_grpc.HostAgentServiceStub(channel)
        listed = await agent.ListVms(agent_pb2.HostAgentServiceListVmsRequest())
    down = (agent_pb2.HostVm.STATE_DOWN, agent_pb2.HostVm.STATE_SUSPENDED)
    return sum(1 for v in listed.vms if v.vm_id == vm_id and v.state not in down)


def destroy_domain(uri: str, vm_id: str) -> None:
    """Destroys this test's domain, as fencing its host would."""
    remove_domains(uri, [vm_id], undefine=False)


@pytest.fixture
async def clients() -> AsyncIterator[list[Client]]:
    made: list[Client] = []
    yield made
    for client in made:
        await client.close()


def _running(vm: vm_pb2.Vm) -> bool:
    return vm.status.state in (S.STATE_POWERING_UP, S.STATE_UP)


async def test_fifty_concurrent_starts_of_one_vm_from_two_controllers_make_one_domain(
    *,
    workdir: Path,
    hosts: list[Daemon],
    clients: list[Client],
    database_url: str,
    guest_image: GuestImage,
    system_libvirt: str,
) -> None:
    for name in ("a", "b"):
        (workdir / name).mkdir()
    ctl_a = start_controller(workdir / "a", database_url)
    ctl_b = start_controller(workdir / "b", database_url)
    try:
        a, b = Client(ctl_a.address, WAIT), Client(ctl_b.address, WAIT)
        clients.extend([a, b])
        for name, daemon in zip(("h1", "h2"), hosts, strict=True):
            await a.hosts.AddHost(host_api.AddHostRequest(name=name, address=daemon.address))
        vm = (
            await a.vms.CreateVm(vm_api.CreateVmRequest(name=RACER, spec=vm_spec(guest_image)))
        ).vm
        try:
            calls = [c.vms.StartVm(vm_api.StartVmRequest(vm=RACER)) for c in (a, b) * 25]
            results = await asyncio.gather(*calls, return_exceptions=True)
            won = [r for r in results if not isinstance(r, BaseException)]
            lost = [r for r in results if isinstance(r, BaseException)]
            assert len(won) == 1, lost[:3]
            assert all(
                isinstance(r, grpc.aio.AioRpcError)
                and r.code() is grpc.StatusCode.FAILED_PRECONDITION
                for r in lost
            ), lost[:3]
            running = await a.until(RACER, _running)
            assert domains_of(system_libvirt, vm.id) + await running_on(hosts[1], vm.id) == 1
            on_h1 = running.status.host_id == (await a.host("h1")).id
            assert domains_of(system_libvirt, vm.id) == on_h1
            assert await running_on(hosts[1], vm.id) == (not on_h1)
        finally:
            with contextlib.suppress(grpc.aio.AioRpcError):
                await a.vms.StopVm(vm_api.StopVmRequest(vm=RACER))
            destroy_domain(system_libvirt, vm.id)
    finally:
        ctl_a.stop()
        ctl_b.stop()


@pytest.mark.parametrize("delay", [0.0, 0.05, 0.3])
async def test_a_controller_killed_mid_start_and_restarted_ends_with_one_vm(
    *,
    workdir: Path,
    hosts: list[Daemon],
    clients: list[Client],
    database_url: str,
    guest_image: GuestImage,
    system_libvirt: str,
    delay: float,
) -> None:
    controller = start_controller(workdir, database_url)
    client = Client(controller.address, WAIT)
    clients.append(client)
    for name, daemon in zip(("h1", "h2"), hosts, strict=True):
        await client.hosts.AddHost(host_api.AddHostRequest(name=name, address=daemon.address))
    vm = (
        await client.vms.CreateVm(vm_api.CreateVmRequest(name=KILLED, spec=vm_spec(guest_image)))
    ).vm
    try:
        start = asyncio.ensure_future(client.vms.StartVm(vm_api.StartVmRequest(vm=KILLED)))
        await asyncio.sleep(delay)
        controller.kill()  # SIGKILL: no clean-up of any kind
        with contextlib.suppress(grpc.aio.AioRpcError):
            await start

        controller = start_controller(workdir, database_url)
        client = Client(controller.address, WAIT)
        clients.append(client)
        # The start either never began (DOWN, as before), or it ends with
        # the VM running once; a DOWN after a start carries its reason.
        settled = await client.until(
            KILLED,
            lambda v: _running(v) or v.status.state == S.STATE_DOWN,
        )
        if settled.status.state == S.STATE_DOWN:
            await asyncio.sleep(3)  # a resumed start would have begun by now
            settled = await client.vm(KILLED)
        if settled.status.state == S.STATE_DOWN:
            assert domains_of(system_libvirt, vm.id) + await running_on(hosts[1], vm.id) == 0
            if settled.status.exit_reason != S.EXIT_REASON_UNSPECIFIED:
                assert settled.status.message
        else:
            if settled.status.host_id == (await client.host("h1")).id:
                settled = await client.until(KILLED, reported)
                assert settled.status.state == S.STATE_UP
            assert domains_of(system_libvirt, vm.id) + await running_on(hosts[1], vm.id) == 1
    finally:
        with contextlib.suppress(grpc.aio.AioRpcError):
            await client.vms.StopVm(vm_api.StopVmRequest(vm=KILLED))
        destroy_domain(system_libvirt, vm.id)
        controller.stop()


async def test_hostd_killed_then_confirmed_down_restarts_an_ha_vm_on_the_other_host(
    hosts: list[Daemon], database_url: str, guest_image: GuestImage, system_libvirt: str
) -> None:
    fast = HaPolicy(fast_interval=1.0, fast_tries=3, slow_interval=2.0, poll_interval=0.2)
    config = ControllerConfig(
        listen="127.0.0.1:0", database_url=database_url, host_retry_seconds=0.2, ha=fast
    )
    ctl = Controller(config)
    await ctl.start()
    client = Client(f"127.0.0.1:{ctl.port}", WAIT)
    h1_daemon, h2_daemon = hosts
    vm_id = ""
    try:
        h1 = (
            await client.hosts.AddHost(
                host_api.AddHostRequest(name="h1", address=h1_daemon.address)
            )
        ).host
        spec = vm_spec(guest_image)
        spec.highly_available = True
        vm_id = (await client.vms.CreateVm(vm_api.CreateVmRequest(name=HA, spec=spec))).vm.id
        await client.vms.StartVm(vm_api.StartVmRequest(vm=HA))
        first = await client.until(HA, _running)
        assert first.status.host_id == h1.id
        h2 = (
            await client.hosts.AddHost(
                host_api.AddHostRequest(name="h2", address=h2_daemon.address)
            )
        ).host

        h1_daemon.kill()
        await _host_state(client, "h1", H.STATE_NON_RESPONSIVE)
        lost = await client.vm(HA)
        assert lost.status.state == S.STATE_UNKNOWN
        # Not restarted while its host may still run it (it does).
        await asyncio.sleep(fast.poll_interval * 10)
        assert (await client.vm(HA)).status.state == S.STATE_UNKNOWN
        assert await running_on(h2_daemon, vm_id) == 0
        assert domains_of(system_libvirt, vm_id) == 1

        destroy_domain(system_libvirt, vm_id)  # the operator fences h1 ...
        await client.hosts.ConfirmHostDown(
            host_api.ConfirmHostDownRequest(host="h1")
        )  # ... says so
        moved = await client.until(HA, lambda v: _running(v) and v.status.host_id == h2.id)
        assert moved.status.ha_restart_count == 1
        assert await running_on(h2_daemon, vm_id) == 1
    finally:
        with contextlib.suppress(grpc.aio.AioRpcError):
            await client.vms.StopVm(vm_api.StopVmRequest(vm=HA))
        if vm_id:
            destroy_domain(system_libvirt, vm_id)
        await client.close()
        await ctl.stop(grace=0)


async def _gone_from(daemon: Daemon, vm_id: str) -> None:
    await until(
        lambda: running_on(daemon, vm_id),
        lambda count: not count,
        what=f"VM {vm_id} to leave {daemon.name}",
        within=WAIT,
        every=0.1,
    )


async def _host_state(client: Client, ref: str, state: int) -> None:
    await until(
        lambda: client.host(ref),
        lambda host: host.status.state == state,
        what=f"host {ref} in state {state}",
        within=WAIT,
        every=0.1,
    )


def qemu_pid(vm_name: str) -> int:
    return int(Path(f"/run/libvirt/qemu/{DOMAIN_NAME_PREFIX}{vm_name}.pid").read_text())


def kill_qemu(vm_name: str) -> None:
    """Kills the VM's QEMU process, as a crash of the emulator would."""
    os.kill(qemu_pid(vm_name), signal.SIGKILL)


async def test_an_ha_vm_whose_emulator_crashes_is_restarted(
    hosts: list[Daemon], guest_image: GuestImage, system_libvirt: str, database_url: str
) -> None:
    fast = HaPolicy(fast_interval=1.0, fast_tries=3, slow_interval=2.0, poll_interval=0.2)
    workdir = Path(tempfile.mkdtemp(prefix="vp-ha-"))
    config = ControllerConfig(
        listen="127.0.0.1:0",
        database_url=database_url,
        host_retry_seconds=0.2,
        ha=fast,
    )
    ctl = Controller(config)
    await ctl.start()
    client = Client(f"127.0.0.1:{ctl.port}", WAIT)
    vm_id = ""
    try:
        h1 = (
            await client.hosts.AddHost(host_api.AddHostRequest(name="h1", address=hosts[0].address))
        ).host
        spec = vm_spec(guest_image)
        spec.highly_available = True
        spec.pinned_host = "h1"  # so that the restart lands on the real host again
        vm_id = (await client.vms.CreateVm(vm_api.CreateVmRequest(name=CRASHY, spec=spec))).vm.id
        await client.vms.StartVm(vm_api.StartVmRequest(vm=CRASHY))
        await client.until(CRASHY, _running)
        first_pid = qemu_pid(CRASHY)

        kill_qemu(CRASHY)
        again = await client.until(CRASHY, lambda v: v.status.ha_restart_count == 1 and _running(v))
        assert again.status.host_id == h1.id
        assert qemu_pid(CRASHY) != first_pid
        assert domains_of(system_libvirt, vm_id) == 1
        up = await client.until(CRASHY, reported)
        assert up.status.state == S.STATE_UP
        assert not up.status.HasField("ha_restart_time")  # UP again: the plan is cleared
    finally:
        with contextlib.suppress(grpc.aio.AioRpcError):
            await client.vms.StopVm(vm_api.StopVmRequest(vm=CRASHY))
        if vm_id:
            destroy_domain(system_libvirt, vm_id)
        await client.close()
        await ctl.stop(grace=0)
        shutil.rmtree(workdir, ignore_errors=True)


async def test_a_real_vm_unknown_to_the_database_is_recorded_with_its_size(
    hosts: list[Daemon], guest_image: GuestImage, system_libvirt: str, database_url: str
) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="vp-ext-"))
    config = ControllerConfig(
        listen="127.0.0.1:0",
        database_url=database_url,
        host_retry_seconds=0.2,
        reconcile_seconds=0.5,
    )
    ctl = Controller(config)
    await ctl.start()
    client = Client(f"127.0.0.1:{ctl.port}", WAIT)
    stranger = str(uuid.uuid4())
    try:
        h1 = (
            await client.hosts.AddHost(host_api.AddHostRequest(name="h1", address=hosts[0].address))
        ).host
        vm_config = agent_pb2.VmConfig(
            vm_id=stranger, name=f"stranger-{_RUN}", spec=vm_spec(guest_image)
        )
        async with grpc.aio.insecure_channel(hosts[0].address) as channel:
            agent = agent_grpc.HostAgentServiceStub(channel)
            await agent.CreateVm(agent_pb2.HostAgentServiceCreateVmRequest(config=vm_config))
        found = await client.until(stranger, lambda v: v.status.origin == S.ORIGIN_EXTERNAL)
        assert found.status.host_id == h1.id
        # Its size as libvirt measures it, once its domain runs.
        found = await client.until(stranger, lambda v: v.spec.vcpus > 0)
        assert (found.spec.vcpus, found.spec.memory_mib) == (1, 256)
        assert (await client.host("h1")).status.vcpus_used == 1
        await asyncio.sleep(2)  # later reconciliations leave it running
        assert domains_of(system_libvirt, stranger) == 1
        assert await running_on(hosts[0], stranger) == 1
    finally:
        destroy_domain(system_libvirt, stranger)
        await client.close()
        await ctl.stop(grace=0)
        shutil.rmtree(workdir, ignore_errors=True)


MIGRATED = f"migrated-{_RUN}"


async def test_a_vm_its_hosts_migrate_follows_to_the_destination_and_never_goes_down(
    hosts: list[Daemon],
    guest_image: GuestImage,
    system_libvirt: str,
    second_libvirt: str,
    database_url: str,
) -> None:
    """hostd migrates a VM live (MigrateVm, called here as an operator or a
    later controller verb would); the controller's view follows it: never
    DOWN, placed on the destination, UP, its guest reporting there."""
    workdir = Path(tempfile.mkdtemp(prefix="vp-mig-"))
    config = ControllerConfig(
        listen="127.0.0.1:0",
        database_url=database_url,
        host_retry_seconds=0.2,
    )
    ctl = Controller(config)
    await ctl.start()
    client = Client(f"127.0.0.1:{ctl.port}", WAIT)
    vm_id = ""
    seen: list[tuple[vm_pb2.Vm.State.ValueType, str]] = []
    watching: asyncio.Task[None] | None = None
    try:
        ids = {}
        for name, daemon in zip(("h1", "h2"), hosts, strict=True):
            added = await client.hosts.AddHost(
                host_api.AddHostRequest(name=name, address=daemon.address)
            )
            ids[added.host.id] = daemon
        vm_id = (
            await client.vms.CreateVm(
                vm_api.CreateVmRequest(name=MIGRATED, spec=vm_spec(guest_image))
            )
        ).vm.id

        async def watch() -> None:
            stream = client.vms.WatchVms(vm_api.WatchVmsRequest(vm_ids=[vm_id]))
            async for change in stream:
                if change.vm.id == vm_id:
                    seen.append((change.vm.status.state, change.vm.status.host_id))

        watching = asyncio.create_task(watch())
        await client.vms.StartVm(vm_api.StartVmRequest(vm=MIGRATED))
        up = await client.until(MIGRATED, reported)
        source = ids[up.status.host_id]
        dest_id, destination = next((i, d) for i, d in ids.items() if d is not source)
        uptime_before = up.status.guest.uptime_seconds

        async with grpc.aio.insecure_channel(source.address) as channel:
            agent = agent_grpc.HostAgentServiceStub(channel)
            await agent.MigrateVm(
                agent_pb2.HostAgentServiceMigrateVmRequest(
                    vm_id=vm_id, destination_address=destination.address
                )
            )
        moved = await client.until(
            MIGRATED,
            lambda v: v.status.host_id == dest_id and v.status.state == S.STATE_UP,
        )
        assert moved.status.exit_reason == S.EXIT_REASON_UNSPECIFIED
        assert await running_on(destination, vm_id) == 1
        # The source lets go of it once the hypervisor's job has ended there.
        await _gone_from(source, vm_id)
        # The guest goes on reporting from the destination, from the same boot.
        later = await client.until(
            MIGRATED, lambda v: v.status.guest.uptime_seconds > uptime_before
        )
        assert later.status.host_id == dest_id
        states = [S.State.Name(state) for state, _host in seen]
        assert "STATE_DOWN" not in states[states.index("STATE_UP") :], states
        assert (S.STATE_MIGRATING_FROM, up.status.host_id) in seen, states
    finally:
        if watching is not None:
            watching.cancel()
        with contextlib.suppress(grpc.aio.AioRpcError):
            await client.vms.StopVm(vm_api.StopVmRequest(vm=MIGRATED))
        if vm_id:
            destroy_domain(system_libvirt, vm_id)
            destroy_domain(second_libvirt, vm_id)
        await client.close()
        await ctl.stop(grace=0)
        shutil.rmtree(workdir, ignore_errors=True)
