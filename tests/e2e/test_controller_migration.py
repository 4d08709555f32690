"""MigrateVm through the controller, with real guests on two real hosts (a
hostd on qemu:///system and one on the second libvirtd; the hosts fixture of
tests/e2e/conftest.py): to a named host and to the scheduler's pick,
the guest reporting on from the same boot and WatchVms never showing DOWN;
the operation's transfer followed as the CLI does, to the switch-over with
its measured downtime; the refusals of a destination; a migration libvirt
refuses (a writable disk off shared storage) leaving the VM UP on its
source and the operation FAILED with the reason. Two guests boot together at the start.

And CancelMigration of a transfer slowed to 1 MiB/s (the controller's
migration_max_bandwidth_mib): the VM UP on its source, the operation FAILED
(CANCELLED), its transfer shown under way before and CANCELLED after. Its
refusal of a VM not migrating:
tests/controller/test_migrate_api.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
from pathlib import Path

import pytest

import virtplane_client as vp
from tests.support.events import vm_until
from tests.support.guests import guest_reported, guest_spec
from tests.support.real import GuestImage
from tests.support.rig_hosts import add_daemon
from tests.support.stack import Daemon
from tests.support.two_hosts import (
    destroy_domain,
    gone_from,
    in_process_controller,
    record_states,
    running_on,
)
from tests.support.virt import disk_image
from tests.support.waiting import until
from virtplane_client.cli import migration

S = vp.VmState
pytestmark = pytest.mark.guest
WAIT = 180.0  # guests may take 40 s to boot on a loaded machine
_RUN = os.getpid()
MOVED, STUCK, SLOW = (f"mig-{n}-{_RUN}" for n in ("moved", "stuck", "slow"))


async def _migrated(
    client: vp.AsyncClient, vm: str, to: str, request_id: str, destination_id: str
) -> vp.Vm:
    """MigrateVm (its repeat with the same key answers the same operation);
    the VM once the operation SUCCEEDED, UP on the destination."""
    begun = await client.vms.migrate(vm, to=to, request_id=request_id)
    assert begun.operation.kind is vp.OperationKind.MIGRATE_VM
    assert begun.operation.host_id == destination_id
    assert begun.vm.status.state is S.MIGRATING_FROM
    again = await client.vms.migrate(vm, to=to, request_id=request_id)
    assert again.operation.id == begun.operation.id
    shown: list[str] = []  # as `virtplane vm migrate --wait` prints them
    done = await migration.follow(client, begun.operation, WAIT, shown.append)
    assert done.state is vp.OperationState.SUCCEEDED, done.error
    assert done.phases.scheduled_time is not None and done.phases.up_time is not None
    # The transfer as the source measured it, to the switch-over.
    transfer = done.migration
    assert transfer is not None and transfer.phase is vp.MigrationPhase.SWITCHED_OVER, shown
    assert transfer.downtime_ms > 0 and transfer.iterations >= 1 and transfer.percent == 100
    assert done.phases.transferring_time is not None
    assert done.phases.switched_over_time is not None
    assert shown[-1].startswith("switched over after") and shown[-1].endswith(
        f"downtime {transfer.downtime_ms} ms"
    )
    moved = await client.vms.get(vm)
    assert (moved.status.state, moved.status.host_id) == (S.UP, destination_id)
    return moved


def _uptime(vm: vp.Vm) -> float:
    return vm.status.guest.uptime_seconds if vm.status.guest is not None else -1


async def _create_two(client: vp.AsyncClient, image: GuestImage, folder: Path) -> list[str]:
    """MOVED, and STUCK with a writable disk on local storage; their ids."""
    local = vp.Disk(
        name="data", path=disk_image(folder / "local.img", "raw"), format=vp.DiskFormat.RAW
    )
    stuck_spec = dataclasses.replace(guest_spec(image), disks=(local,))
    return [
        (await client.vms.create(MOVED, guest_spec(image))).id,
        (await client.vms.create(STUCK, stuck_spec)).id,
    ]


async def _refusals(client: vp.AsyncClient, source: str) -> None:
    """The VM's own host and an unknown one are refused; it stays UP there."""
    with pytest.raises(vp.errors.FailedPrecondition, match="it is the VM's own host"):
        await client.vms.migrate(MOVED, to=source)
    with pytest.raises(vp.errors.NotFound):
        await client.vms.migrate(MOVED, to="no-such-host")
    assert (await client.vms.get(MOVED)).status.state is S.UP


async def _refused_by_libvirt(client: vp.AsyncClient, daemons: dict[str, Daemon]) -> None:
    """libvirt refuses to move a writable disk off shared storage: the VM
    runs on at its source, the operation FAILED with the reason."""
    stuck = await vm_until(client, STUCK, guest_reported, WAIT)
    begun = await client.vms.migrate(STUCK)
    failed = await client.operations.wait(begun.operation, WAIT)
    assert failed.state is vp.OperationState.FAILED and failed.error is not None
    assert "Migration without shared storage is unsafe" in failed.error.message
    after = await client.vms.get(STUCK)
    assert (after.status.state, after.status.host_id) == (S.UP, stuck.status.host_id)
    assert await running_on(daemons[stuck.status.host_id], stuck.id) == 1


async def test_migrate_vm_moves_a_guest_and_refuses_what_cannot_work(
    hosts: list[Daemon],
    guest_image: GuestImage,
    *,
    system_libvirt: str,
    second_libvirt: str,
    database_url: str,
    workdir: Path,
) -> None:
    seen: list[tuple[S, str]] = []
    watching: asyncio.Task[None] | None = None
    made: list[str] = []
    async with in_process_controller(database_url) as client:
        try:
            daemons: dict[str, Daemon] = {}
            for name, daemon in zip(("h1", "h2"), hosts, strict=True):
                daemons[(await add_daemon(client, name, daemon)).id] = daemon
            made += await _create_two(client, guest_image, workdir)
            watching = asyncio.create_task(record_states(client, made[0], seen))
            await client.vms.start(MOVED)
            await client.vms.start(STUCK)
            up = await vm_until(client, MOVED, guest_reported, WAIT)
            assert up.status.guest is not None
            source_id = up.status.host_id
            dest_id = next(i for i in daemons if i != source_id)
            names = await client.hosts.names()

            await _refusals(client, names[source_id])

            # To a named host, then back to the scheduler's pick (the only other).
            there = await _migrated(client, MOVED, names[dest_id], "move-1", dest_id)
            assert await running_on(daemons[dest_id], up.id) == 1
            await gone_from(daemons[source_id], up.id)
            assert there.status.guest is not None
            back = await _migrated(client, MOVED, "", "move-2", source_id)
            # The guest reports on from the same boot: its uptime keeps counting.
            uptime = up.status.guest.uptime_seconds
            later = await vm_until(client, MOVED, lambda v: _uptime(v) > uptime, WAIT)
            assert later.status.host_id == back.status.host_id == source_id
            states = [state for state, _host in seen]
            assert S.DOWN not in states[states.index(S.UP) :], states
            assert (S.MIGRATING_FROM, source_id) in seen and (S.MIGRATING_FROM, dest_id) in seen

            await _refused_by_libvirt(client, daemons)
        finally:
            if watching is not None:
                watching.cancel()
            for vm in (MOVED, STUCK):
                with contextlib.suppress(vp.ClientError):
                    await client.vms.stop(vm)
            for vm_id in made:
                destroy_domain(system_libvirt, vm_id)
                destroy_domain(second_libvirt, vm_id)


async def _under_way(client: vp.AsyncClient, op: vp.Operation) -> None:
    """The operation shows the transfer under way, as its source reports it."""
    under_way = await until(
        lambda: client.operations.get(op),
        lambda o: o.migration is not None and o.migration.data_processed_bytes > 0,
        within=WAIT,
    )
    assert under_way.migration is not None
    assert under_way.migration.phase is vp.MigrationPhase.TRANSFERRING
    assert under_way.migration.data_remaining_bytes > 0
    assert under_way.migration.percent < 100
    assert under_way.phases.transferring_time is not None


async def test_a_cancelled_migration_leaves_the_vm_up_on_its_source(
    hosts: list[Daemon],
    guest_image: GuestImage,
    *,
    system_libvirt: str,
    second_libvirt: str,
    database_url: str,
) -> None:
    vm_id = ""
    async with in_process_controller(database_url, migration_max_bandwidth_mib=1) as client:
        try:
            daemons: dict[str, Daemon] = {}
            for name, daemon in zip(("h1", "h2"), hosts, strict=True):
                daemons[(await add_daemon(client, name, daemon)).id] = daemon
            vm_id = (await client.vms.create(SLOW, guest_spec(guest_image))).id
            await client.vms.start(SLOW)
            up = await vm_until(client, SLOW, guest_reported, WAIT)
            begun = await client.vms.migrate(SLOW, request_id="slow-1")
            assert begun.vm.status.state is S.MIGRATING_FROM
            dest = daemons[begun.operation.host_id]
            await _under_way(client, begun.operation)

            cancelled = await client.vms.cancel_migration(SLOW, request_id="cancel-1")
            assert cancelled.operation.id == begun.operation.id
            op = cancelled.operation
            assert op.state is vp.OperationState.FAILED and op.error is not None
            assert (op.error.code, op.error.message) == ("CANCELLED", "the migration was cancelled")
            again = await client.vms.cancel_migration(SLOW, request_id="cancel-1")
            assert again.operation.id == op.id
            back = await vm_until(client, SLOW, lambda v: v.status.state is S.UP, WAIT)
            assert back.status.host_id == up.status.host_id
            ended = await until(
                lambda: client.operations.get(op),
                lambda o: (
                    o.migration is not None
                    and o.migration.phase is not vp.MigrationPhase.TRANSFERRING
                ),
                within=WAIT,
            )
            assert ended.migration is not None
            assert ended.migration.phase is vp.MigrationPhase.CANCELLED, ended.migration
            assert await running_on(daemons[up.status.host_id], vm_id) == 1
            await gone_from(dest, vm_id)
            with pytest.raises(vp.errors.FailedPrecondition, match="it is UP"):
                await client.vms.cancel_migration(SLOW)
        finally:
            with contextlib.suppress(vp.ClientError):
                await client.vms.stop(SLOW)
            if vm_id:
                destroy_domain(system_libvirt, vm_id)
                destroy_domain(second_libvirt, vm_id)
