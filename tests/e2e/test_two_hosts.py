"""Starts racing each other, a controller killed mid-start, HA failover, and a
VM its hosts migrate, with real guests: a controller (a process, or two) and
two real hosts — a hostd on qemu:///system, and a hostd on a second libvirtd
on this machine (the second_libvirt fixture; hostd/README.md, "Two hosts on
one machine"). The controller is driven through virtplane_client; hostd's
HostAgentService through its raw stub (the client covers the controller only).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import signal
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import grpc
import pytest
from virtplane.v1 import host_agent_service_pb2 as agent_pb2
from virtplane.v1 import host_agent_service_pb2_grpc as agent_grpc

import virtplane_client as vp
from controller.ha import HaPolicy
from hostd.builder import DOMAIN_NAME_PREFIX
from tests.support.events import vm_until
from tests.support.guests import guest_reported, guest_spec, vm_spec
from tests.support.real import GuestImage
from tests.support.rig_hosts import add_daemon
from tests.support.stack import Daemon, start_controller, start_host
from tests.support.two_hosts import (
    destroy_all,
    destroy_domain,
    domains_of,
    gone_from,
    in_process_controller,
    record_states,
    running_on,
)
from tests.support.waiting import until

S = vp.VmState
pytestmark = pytest.mark.guest
WAIT = 180.0  # guests may take 40 s to boot on a loaded machine
RUNNING = (S.POWERING_UP, S.UP)
# Domain names are per libvirtd, which other test runs on this machine share.
_RUN = os.getpid()
RACER, KILLED, HA, CRASHY = (f"{n}-{_RUN}" for n in ("racer", "killed", "ha", "crashy"))


@pytest.fixture
def enrolled(second_libvirt: str) -> Iterator[list[Daemon]]:
    """The hostds a test enrolls with its controller processes
    (_enroll_two); stopped at the end."""
    daemons: list[Daemon] = []
    try:
        yield daemons
    finally:
        for daemon in daemons:
            daemon.stop()
        destroy_all(second_libvirt)


async def _enroll_two(
    controller: Daemon, workdir: Path, uris: tuple[str, str], into: list[Daemon]
) -> list[Daemon]:
    """hostd h1 on uris[0] and h2 on uris[1], added to controller and
    enrolled with AddHost's tokens (tests.support.stack.start_host)."""
    for name, uri in zip(("h1", "h2"), uris, strict=True):
        folder = workdir / name
        folder.mkdir()
        folder.chmod(0o755)
        into.append(await asyncio.to_thread(start_host, controller, folder, name, uri))
    return into


@pytest.fixture
async def clients() -> AsyncIterator[list[vp.AsyncClient]]:
    made: list[vp.AsyncClient] = []
    yield made
    for client in made:
        await client.close()


async def _vm_until(client: vp.AsyncClient, ref: str, check: Callable[[vp.Vm], object]) -> vp.Vm:
    return await vm_until(client, ref, check, WAIT)


def _running(vm: vp.Vm) -> bool:
    return vm.status.state in RUNNING


async def test_fifty_concurrent_starts_of_one_vm_from_two_controllers_make_one_domain(
    *,
    workdir: Path,
    enrolled: list[Daemon],
    second_libvirt: str,
    clients: list[vp.AsyncClient],
    database_url: str,
    guest_image: GuestImage,
    system_libvirt: str,
) -> None:
    for name in ("a", "b"):
        (workdir / name).mkdir()
    # One database, one state folder: one CA and one admin for both.
    ctl_a = start_controller(
        workdir / "a", database_url, state_dir=workdir / "state", plaintext_hosts=False
    )
    ctl_b = start_controller(
        workdir / "b", database_url, state_dir=workdir / "state", plaintext_hosts=False
    )
    try:
        a, b = ctl_a.client(), ctl_b.client()
        clients.extend([a, b])
        uris = (system_libvirt, second_libvirt)
        hosts = await _enroll_two(ctl_a, workdir, uris, enrolled)
        vm = await a.vms.create(RACER, guest_spec(guest_image))
        try:
            calls = [c.vms.start(RACER) for c in (a, b) * 25]
            results = await asyncio.gather(*calls, return_exceptions=True)
            won = [r for r in results if not isinstance(r, BaseException)]
            lost = [r for r in results if isinstance(r, BaseException)]
            assert len(won) == 1, lost[:3]
            assert all(
                isinstance(r, vp.RpcError) and r.code is grpc.StatusCode.FAILED_PRECONDITION
                for r in lost
            ), lost[:3]
            running = await a.vms.wait_for(RACER, RUNNING, timeout=WAIT)
            assert domains_of(system_libvirt, vm.id) + await running_on(hosts[1], vm.id) == 1
            on_h1 = running.status.host_id == (await a.hosts.get("h1")).id
            assert domains_of(system_libvirt, vm.id) == on_h1
            assert await running_on(hosts[1], vm.id) == (not on_h1)
        finally:
            with contextlib.suppress(vp.ClientError):
                await a.vms.stop(RACER)
            destroy_domain(system_libvirt, vm.id)
    finally:
        ctl_a.stop()
        ctl_b.stop()


@pytest.mark.parametrize("delay", [0.0, 0.05, 0.3])
async def test_a_controller_killed_mid_start_and_restarted_ends_with_one_vm(
    *,
    workdir: Path,
    enrolled: list[Daemon],
    second_libvirt: str,
    clients: list[vp.AsyncClient],
    database_url: str,
    guest_image: GuestImage,
    system_libvirt: str,
    delay: float,
) -> None:
    controller = start_controller(workdir, database_url, plaintext_hosts=False)
    client = controller.client()
    clients.append(client)
    hosts = await _enroll_two(controller, workdir, (system_libvirt, second_libvirt), enrolled)
    vm = await client.vms.create(KILLED, guest_spec(guest_image))
    try:
        start = asyncio.ensure_future(client.vms.start(KILLED))
        await asyncio.sleep(delay)
        controller.kill()  # SIGKILL: no clean-up of any kind
        with contextlib.suppress(vp.ClientError):
            await start

        controller = start_controller(workdir, database_url, plaintext_hosts=False)
        client = controller.client()
        clients.append(client)
        # The start either never began (DOWN, as before), or it ends with
        # the VM running once; a DOWN after a start carries its reason.
        settled = await client.vms.wait_for(KILLED, (*RUNNING, S.DOWN), timeout=WAIT)
        if settled.status.state == S.DOWN:
            await asyncio.sleep(3)  # a resumed start would have begun by now
            settled = await client.vms.get(KILLED)
        if settled.status.state == S.DOWN:
            assert domains_of(system_libvirt, vm.id) + await running_on(hosts[1], vm.id) == 0
            if settled.status.exit_reason != vp.ExitReason.UNSPECIFIED:
                assert settled.status.message
        else:
            if settled.status.host_id == (await client.hosts.get("h1")).id:
                settled = await _vm_until(client, KILLED, guest_reported)
                assert settled.status.state == S.UP
            assert domains_of(system_libvirt, vm.id) + await running_on(hosts[1], vm.id) == 1
    finally:
        with contextlib.suppress(vp.ClientError):
            await client.vms.stop(KILLED)
        destroy_domain(system_libvirt, vm.id)
        controller.stop()


FAST_HA = HaPolicy(fast_interval=1.0, fast_tries=3, slow_interval=2.0, poll_interval=0.2)


async def test_hostd_killed_then_confirmed_down_restarts_an_ha_vm_on_the_other_host(
    hosts: list[Daemon], database_url: str, guest_image: GuestImage, system_libvirt: str
) -> None:
    h1_daemon, h2_daemon = hosts
    vm_id = ""
    async with in_process_controller(database_url, ha=FAST_HA) as client:
        try:
            h1 = await add_daemon(client, "h1", h1_daemon)
            spec = dataclasses.replace(guest_spec(guest_image), highly_available=True)
            vm_id = (await client.vms.create(HA, spec)).id
            await client.vms.start(HA)
            first = await client.vms.wait_for(HA, RUNNING, timeout=WAIT)
            assert first.status.host_id == h1.id
            h2 = await add_daemon(client, "h2", h2_daemon)

            h1_daemon.kill()
            await _host_state(client, "h1", vp.HostState.NON_RESPONSIVE)
            lost = await client.vms.get(HA)
            assert lost.status.state == S.UNKNOWN
            # Not restarted while its host may still run it (it does).
            await asyncio.sleep(FAST_HA.poll_interval * 10)
            assert (await client.vms.get(HA)).status.state == S.UNKNOWN
            assert await running_on(h2_daemon, vm_id) == 0
            assert domains_of(system_libvirt, vm_id) == 1

            destroy_domain(system_libvirt, vm_id)  # the operator fences h1 ...
            await client.hosts.confirm_down("h1")  # ... says so
            moved = await _vm_until(client, HA, lambda v: _running(v) and v.status.host_id == h2.id)
            assert moved.status.ha_restart_count == 1
            assert await running_on(h2_daemon, vm_id) == 1
        finally:
            with contextlib.suppress(vp.ClientError):
                await client.vms.stop(HA)
            if vm_id:
                destroy_domain(system_libvirt, vm_id)


async def _host_state(client: vp.AsyncClient, ref: str, state: vp.HostState) -> None:
    # Hosts have no watch: their state is polled.
    await until(
        lambda: client.hosts.get(ref),
        lambda host: host.status.state == state,
        what=f"host {ref} in state {state.name}",
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
    vm_id = ""
    async with in_process_controller(database_url, ha=FAST_HA) as client:
        try:
            h1 = await add_daemon(client, "h1", hosts[0])
            spec = dataclasses.replace(
                guest_spec(guest_image),
                highly_available=True,
                pinned_host="h1",  # so that the restart lands on the real host again
            )
            vm_id = (await client.vms.create(CRASHY, spec)).id
            await client.vms.start(CRASHY)
            await client.vms.wait_for(CRASHY, RUNNING, timeout=WAIT)
            first_pid = qemu_pid(CRASHY)

            kill_qemu(CRASHY)
            again = await _vm_until(
                client, CRASHY, lambda v: v.status.ha_restart_count == 1 and _running(v)
            )
            assert again.status.host_id == h1.id
            assert qemu_pid(CRASHY) != first_pid
            assert domains_of(system_libvirt, vm_id) == 1
            up = await _vm_until(client, CRASHY, guest_reported)
            assert up.status.state == S.UP
            assert up.status.ha_restart_time is None  # UP again: the plan is cleared
        finally:
            with contextlib.suppress(vp.ClientError):
                await client.vms.stop(CRASHY)
            if vm_id:
                destroy_domain(system_libvirt, vm_id)


async def test_a_real_vm_unknown_to_the_database_is_recorded_with_its_size(
    hosts: list[Daemon], guest_image: GuestImage, system_libvirt: str, database_url: str
) -> None:
    stranger = str(uuid.uuid4())
    async with in_process_controller(database_url, reconcile_seconds=0.5) as client:
        try:
            h1 = await add_daemon(client, "h1", hosts[0])
            vm_config = agent_pb2.VmConfig(
                vm_id=stranger, name=f"stranger-{_RUN}", spec=vm_spec(guest_image)
            )
            async with hosts[0].channel() as channel:
                agent = agent_grpc.HostAgentServiceStub(channel)
                await agent.CreateVm(agent_pb2.HostAgentServiceCreateVmRequest(config=vm_config))
            found = await _vm_until(
                client, stranger, lambda v: v.status.origin == vp.Origin.EXTERNAL
            )
            assert found.status.host_id == h1.id
            # Its size as libvirt measures it, once its domain runs.
            found = await _vm_until(client, stranger, lambda v: v.spec.vcpus > 0)
            assert (found.spec.vcpus, found.spec.memory_mib) == (1, 256)
            assert (await client.hosts.get("h1")).status.vcpus_used == 1
            await asyncio.sleep(2)  # later reconciliations leave it running
            assert domains_of(system_libvirt, stranger) == 1
            assert await running_on(hosts[0], stranger) == 1
        finally:
            destroy_domain(system_libvirt, stranger)


MIGRATED = f"migrated-{_RUN}"


async def _migrate(source: Daemon, vm_id: str, destination: Daemon, host_id: str) -> None:
    """MigrateVm on the source hostd, as an operator or a later controller verb would."""
    async with source.channel() as channel:
        agent = agent_grpc.HostAgentServiceStub(channel)
        await agent.MigrateVm(
            agent_pb2.HostAgentServiceMigrateVmRequest(
                vm_id=vm_id, destination_address=destination.address, destination_host_id=host_id
            )
        )


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
    vm_id = ""
    seen: list[tuple[S, str]] = []
    watching: asyncio.Task[None] | None = None
    async with in_process_controller(database_url) as client:
        try:
            ids = {}
            for name, daemon in zip(("h1", "h2"), hosts, strict=True):
                ids[(await add_daemon(client, name, daemon)).id] = daemon
            vm_id = (await client.vms.create(MIGRATED, guest_spec(guest_image))).id
            watching = asyncio.create_task(record_states(client, vm_id, seen))
            await client.vms.start(MIGRATED)
            up = await _vm_until(client, MIGRATED, guest_reported)
            assert up.status.guest is not None
            source = ids[up.status.host_id]
            dest_id, destination = next((i, d) for i, d in ids.items() if d is not source)
            uptime_before = up.status.guest.uptime_seconds

            await _migrate(source, vm_id, destination, dest_id)
            moved = await _vm_until(
                client, MIGRATED, lambda v: v.status.host_id == dest_id and v.status.state == S.UP
            )
            assert moved.status.exit_reason == vp.ExitReason.UNSPECIFIED
            assert await running_on(destination, vm_id) == 1
            # The source lets go of it once the hypervisor's job has ended there.
            await gone_from(source, vm_id)
            # The guest goes on reporting from the destination, from the same boot.
            later = await _vm_until(
                client,
                MIGRATED,
                lambda v: (
                    v.status.guest is not None and v.status.guest.uptime_seconds > uptime_before
                ),
            )
            assert later.status.host_id == dest_id
            states = [state for state, _host in seen]
            assert S.DOWN not in states[states.index(S.UP) :], states
            assert (S.MIGRATING_FROM, up.status.host_id) in seen, states
        finally:
            if watching is not None:
                watching.cancel()
            with contextlib.suppress(vp.ClientError):
                await client.vms.stop(MIGRATED)
            if vm_id:
                destroy_domain(system_libvirt, vm_id)
                destroy_domain(second_libvirt, vm_id)
