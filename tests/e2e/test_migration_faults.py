"""Migrations through the controller's MigrateVm that fail or are cut off,
with real guests on two real hosts (h1: a hostd on qemu:///system, h2: one
on the second libvirtd; tests.support.two_hosts):

- h2 refuses: its before_vm_migrate_destination hook fails, or the VM's
  disk is not under its image roots (a disk it does not have);
- the destination's hostd is killed (SIGKILL) mid-transfer;
- the source's hostd is killed mid-transfer, then started again;
- the controller's process is killed (SIGKILL) mid-transfer, then
  started again on the same database: the hosts carry the migration
  through.

Each ends with exactly one running domain across the two libvirt daemons
(asked directly), the controller showing the VM UP on that host, the
migration's operation ended with its reason, and nothing left booked on
the host the VM is not on. Transfers are slowed with the controller's
migration_max_bandwidth_mib so that the faults land mid-way. Waits have
deadlines that only bound them (WAIT); nothing is timed.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import libvirt
import pytest
from virtplane.v1 import host_agent_service_pb2 as agent_pb2
from virtplane.v1 import host_agent_service_pb2_grpc as agent_grpc

import virtplane_client as vp
from tests.support.events import vm_until
from tests.support.guests import guest_reported, guest_spec
from tests.support.real import GuestImage
from tests.support.rig_hosts import add_daemon
from tests.support.stack import Daemon, start_controller
from tests.support.two_hosts import (
    destroy_all,
    destroy_domain,
    in_process_controller,
    register_hosts,
    restart,
    running_on,
    start_hosts,
)
from tests.support.virt import disk_image
from tests.support.waiting import until

S = vp.VmState
OpState = vp.OperationState
pytestmark = pytest.mark.guest
WAIT = 180.0  # guests may take 40 s to boot on a loaded machine
_RUN = os.getpid()
HOOKED, BARE, LOST_DEST, LOST_SOURCE, LOST_CTL = (
    f"fault-{n}-{_RUN}" for n in ("hooked", "bare", "dest", "source", "ctl")
)
REFUSAL = "migrations to this host are closed for the night"
HOOK = f'#!/bin/sh\necho "{REFUSAL}" >&2\nexit 1\n'


def running_domains(uris: tuple[str, str], vm_id: str) -> list[str]:
    """The libvirt URIs that run a domain of the VM, asked directly."""
    found = []
    for uri in uris:
        conn = libvirt.open(uri)
        try:
            if any(d.UUIDString() == vm_id and d.isActive() for d in conn.listAllDomains()):
                found.append(uri)
        finally:
            conn.close()
    return found


async def _clear(client: vp.AsyncClient, uris: tuple[str, str], vms: dict[str, str]) -> None:
    """The end of a test: each VM (name: id, the id empty if never made)
    stopped through the controller, and its domain gone from both libvirt
    daemons whatever the controller managed."""
    for name in vms:
        with contextlib.suppress(vp.ClientError):
            await client.vms.stop(name)
    for vm_id in filter(None, vms.values()):
        for uri in uris:
            destroy_domain(uri, vm_id)


@pytest.fixture
def only_h1() -> Iterator[Path]:
    """A folder of disk images that h1 admits and h2 does not (both admit
    the temporary folder: tests.support.real.IMAGE_ROOTS)."""
    path = Path(tempfile.mkdtemp(prefix="vp-h1-", dir="/var/tmp"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def refusing_hosts(
    workdir: Path, only_h1: Path, system_libvirt: str, second_libvirt: str
) -> Iterator[list[Daemon]]:
    """h1 with only_h1 as an image root; h2 with a before-migration hook
    that always fails."""
    script = workdir / "hooks" / "before_vm_migrate_destination" / "10-refuse"
    script.parent.mkdir(parents=True)
    script.write_text(HOOK)
    script.chmod(0o755)
    extra = (("--image-root", str(only_h1)), ("--hooks-dir", str(workdir / "hooks")))
    yield from start_hosts(workdir, (system_libvirt, second_libvirt), extra)


async def _booked(client: vp.AsyncClient, host: str) -> int:
    return (await client.hosts.get(host)).status.vcpus_used


async def _refused(
    client: vp.AsyncClient, vm: str, uris: tuple[str, str], h1: vp.Host
) -> vp.Operation:
    """MigrateVm of vm (UP on h1) is refused: the VM stays UP on h1, its one
    running domain there, nothing booked on h2; returns the operation."""
    with pytest.raises(vp.ClientError):
        await client.vms.migrate(vm, to="h2")
    ops = await client.operations.list(vm=vm)
    failed = next(op for op in ops if op.kind is vp.OperationKind.MIGRATE_VM)
    assert failed.state is OpState.FAILED and failed.error is not None, failed
    after = await client.vms.get(vm)
    assert (after.status.state, after.status.host_id) == (S.UP, h1.id)
    assert running_domains(uris, after.id) == [uris[0]]
    assert await _booked(client, "h2") == 0
    return failed


async def test_a_destination_that_refuses_leaves_the_vm_up_on_its_source(
    refusing_hosts: list[Daemon],
    guest_image: GuestImage,
    only_h1: Path,
    *,
    system_libvirt: str,
    second_libvirt: str,
    database_url: str,
) -> None:
    uris = (system_libvirt, second_libvirt)
    made = {HOOKED: "", BARE: ""}
    async with in_process_controller(database_url) as client:
        try:
            # Both boot on h1, the only host until they run.
            h1 = await add_daemon(client, "h1", refusing_hosts[0])
            seed = vp.Disk(
                name="seed", path=disk_image(only_h1 / "seed.img", "raw"), read_only=True
            )
            bare_spec = dataclasses.replace(guest_spec(guest_image), disks=(seed,))
            made[HOOKED] = (await client.vms.create(HOOKED, guest_spec(guest_image))).id
            made[BARE] = (await client.vms.create(BARE, bare_spec)).id
            for vm in (HOOKED, BARE):
                await client.vms.start(vm)
            await asyncio.gather(*(vm_until(client, vm, guest_reported, WAIT) for vm in made))
            await add_daemon(client, "h2", refusing_hosts[1])

            hooked = await _refused(client, HOOKED, uris, h1)
            assert hooked.error is not None and REFUSAL in hooked.error.message, hooked.error
            assert "before_vm_migrate_destination" in hooked.error.message

            bare = await _refused(client, BARE, uris, h1)
            assert bare.error is not None and "disks[0].path" in bare.error.message, bare.error
        finally:
            await _clear(client, uris, made)


async def _up_on_h1(
    client: vp.AsyncClient, hosts: list[Daemon], vm: str, image: GuestImage
) -> tuple[vp.Host, str]:
    """h1 and h2 added, vm created and UP on h1 (the only host until its
    guest reports); h1 and the VM's id."""
    h1 = await add_daemon(client, "h1", hosts[0])
    vm_id = (await client.vms.create(vm, guest_spec(image))).id
    await client.vms.start(vm)
    up = await vm_until(client, vm, guest_reported, WAIT)
    assert up.status.host_id == h1.id
    await add_daemon(client, "h2", hosts[1])
    return h1, vm_id


async def _progress(source: Daemon, vm_id: str) -> agent_pb2.MigrationProgress:
    """The VM's migration as its source hostd reports it."""
    async with source.channel() as channel:
        agent = agent_grpc.HostAgentServiceStub(channel)
        request = agent_pb2.HostAgentServiceGetMigrationProgressRequest(vm_id=vm_id)
        return (await agent.GetMigrationProgress(request)).progress


async def _transferring(source: Daemon, vm_id: str) -> agent_pb2.MigrationProgress:
    """Waits until the source's hypervisor is sending the VM's memory."""
    return await until(
        lambda: _progress(source, vm_id),
        lambda p: p.data_processed_bytes > 0,
        what=f"the transfer of VM {vm_id} to begin",
        within=WAIT,
        every=0.1,
    )


async def _settled(client: vp.AsyncClient, vm: str, uris: tuple[str, str]) -> tuple[str, vp.Vm]:
    """Waits until exactly one of the two libvirt daemons runs the VM and the
    controller shows it UP on that host, which holds the only booking;
    returns that libvirt URI and the VM."""
    names = {v: k for k, v in (await client.hosts.names()).items()}
    by_uri = dict(zip(uris, ("h1", "h2"), strict=True))

    async def look() -> tuple[list[str], vp.Vm]:
        return await asyncio.to_thread(running_domains, uris, vm_id), await client.vms.get(vm)

    vm_id = (await client.vms.get(vm)).id
    found, settled = await until(
        look,
        lambda seen: (
            len(seen[0]) == 1
            and seen[1].status.state is S.UP
            and seen[1].status.host_id == names[by_uri[seen[0][0]]]
        ),
        what=f"VM {vm} running on one host, and UP there",
        within=WAIT,
        every=0.2,
    )
    other = next(name for uri, name in by_uri.items() if uri != found[0])
    assert await _booked(client, other) == 0
    assert await _booked(client, by_uri[found[0]]) == 1
    return found[0], settled


def _ended(op: vp.Operation, landed: bool) -> None:
    """The migration's operation ended: SUCCEEDED if the VM landed on the
    destination, else FAILED with a reason."""
    assert op.done, op
    if landed:
        assert op.state is OpState.SUCCEEDED, op.error
    else:
        assert op.state is OpState.FAILED and op.error is not None and op.error.message, op


async def test_the_destination_hostd_killed_mid_transfer_leaves_the_vm_up_on_its_source(
    hosts: list[Daemon],
    guest_image: GuestImage,
    *,
    system_libvirt: str,
    second_libvirt: str,
    database_url: str,
) -> None:
    uris = (system_libvirt, second_libvirt)
    vm_id = ""
    async with in_process_controller(database_url, migration_max_bandwidth_mib=1) as client:
        try:
            h1, vm_id = await _up_on_h1(client, hosts, LOST_DEST, guest_image)
            begun = await client.vms.migrate(LOST_DEST, to="h2")
            sent = await _transferring(hosts[0], vm_id)
            print(f"transferring: {sent.data_processed_bytes} of {sent.data_total_bytes} bytes")
            await asyncio.to_thread(hosts[1].kill)

            done = await client.operations.wait(begun.operation, WAIT)
            _ended(done, landed=False)
            assert done.error is not None
            assert done.error.message.startswith("the destination host 'h2' cannot be reached")
            assert (await _settled(client, LOST_DEST, uris))[0] == system_libvirt
            # The destination started again has nothing of it.
            hosts[1] = await asyncio.to_thread(restart, hosts[1])
            await until(
                lambda: client.hosts.get("h2"),
                lambda h: h.status.state is vp.HostState.UP,
                what="h2 UP again",
                within=WAIT,
            )
            assert await running_on(hosts[1], vm_id) == 0
            assert (await _settled(client, LOST_DEST, uris))[1].status.host_id == h1.id
        finally:
            await _clear(client, uris, {LOST_DEST: vm_id})


async def test_the_source_hostd_killed_mid_transfer_and_restarted_ends_with_one_vm(
    hosts: list[Daemon],
    guest_image: GuestImage,
    *,
    system_libvirt: str,
    second_libvirt: str,
    database_url: str,
) -> None:
    uris = (system_libvirt, second_libvirt)
    vm_id = ""
    async with in_process_controller(database_url, migration_max_bandwidth_mib=1) as client:
        try:
            _h1, vm_id = await _up_on_h1(client, hosts, LOST_SOURCE, guest_image)
            begun = await client.vms.migrate(LOST_SOURCE, to="h2")
            await _transferring(hosts[0], vm_id)
            await asyncio.to_thread(hosts[0].kill)
            hosts[0] = await asyncio.to_thread(restart, hosts[0])

            uri, _vm = await _settled(client, LOST_SOURCE, uris)
            done = await client.operations.wait(begun.operation, WAIT)
            _ended(done, landed=uri == second_libvirt)
            print(f"ended on {uri}: {done.state.name} {done.error}")
        finally:
            await _clear(client, uris, {LOST_SOURCE: vm_id})


CONTROLLER_BANDWIDTH_MIB = 4
"""The transfer's cap when the controller is killed mid-way: slow enough to
kill it mid-transfer, fast enough to land soon after (a few seconds)."""


async def test_the_controller_killed_mid_transfer_and_started_again_ends_with_one_vm(
    guest_image: GuestImage,
    workdir: Path,
    *,
    system_libvirt: str,
    second_libvirt: str,
    database_url: str,
) -> None:
    """The controller's process is killed (SIGKILL) mid-transfer, then
    started again on the same database and state folder while the hosts
    (enrolled with it) carry on."""
    uris = (system_libvirt, second_libvirt)
    flags = ("--migration-max-bandwidth", str(CONTROLLER_BANDWIDTH_MIB))
    ctl = await asyncio.to_thread(start_controller, workdir, database_url, extra=flags)
    client = ctl.client()
    daemons: list[Daemon] = []
    vm_id = ""
    try:
        h1, h2 = await asyncio.to_thread(register_hosts, ctl, workdir, uris)
        daemons.append(await asyncio.to_thread(h1.start, ctl))  # the only host UP until it runs
        vm_id = (await client.vms.create(LOST_CTL, guest_spec(guest_image))).id
        await client.vms.start(LOST_CTL)
        up = await vm_until(client, LOST_CTL, guest_reported, WAIT)
        assert up.status.host_id == h1.host.host_id
        daemons.append(await asyncio.to_thread(h2.start, ctl))

        begun = await client.vms.migrate(LOST_CTL, to="h2")
        await _transferring(daemons[0], vm_id)
        await client.close()
        await asyncio.to_thread(ctl.kill)  # SIGKILL: no clean-up of any kind
        sent = await _progress(daemons[0], vm_id)
        assert sent.phase == agent_pb2.MigrationProgress.PHASE_TRANSFERRING, sent

        ctl = await asyncio.to_thread(restart, ctl)
        client = ctl.client()
        uri, _vm = await _settled(client, LOST_CTL, uris)
        done = await client.operations.wait(begun.operation, WAIT)
        # The hosts carried the migration through without the controller.
        assert uri == second_libvirt
        _ended(done, landed=True)
    finally:
        await _clear(client, uris, {LOST_CTL: vm_id})
        await client.close()
        for daemon in (*daemons, ctl):
            await asyncio.to_thread(daemon.stop)
        await asyncio.to_thread(destroy_all, second_libvirt)
