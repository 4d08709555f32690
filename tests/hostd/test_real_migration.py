"""Live migration of real guests between two hostd processes, each with its own libvirtd.

Host A is a hostd on qemu:///system, host B a hostd on the second libvirtd
(the second_libvirt fixture); each has a host id and its pair from one test
CA where its QEMU reads it, so every migration here goes over QEMU's TLS
(tests.support.migration_rig; test_real_migration_tls.py shows it from QEMU).
Three guests boot on A together at the start: "moved", with a read-only
disk, is migrated to B; "stays" serves the cases that leave the VM on A
(refusals, an unreachable destination, a cancelled migration); "orphaned" is
left by a source hostd killed in the middle of its migration. One more, with
a writable disk on local storage, is refused by libvirt before it has booted.
Waits are on conditions with generous deadlines; durations are printed (-s),
never asserted.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import grpc
import libvirt
import pytest
from virtplane.v1 import host_agent_service_pb2 as pb
from virtplane.v1 import vm_pb2

from hostd.domxml import METADATA_NAMESPACE, parse_metadata
from tests.hostd.guest_configs import guest_config
from tests.support.migration_rig import Pair, booted_pair, scratch, start_host, state_names
from tests.support.real import GuestImage
from tests.support.stack import free_port
from tests.support.virt import disk_image, disks_of, domain_exists

S = pb.HostVm
P = pb.MigrationProgress
TIMEOUT = 240.0
"""Generous: a TCG guest reports in ~5-8 s alone; the machine is shared."""

pytestmark = pytest.mark.guest


def _image(workdir: Path) -> str:
    """A new raw image in workdir/images (searchable by QEMU's user)."""
    folder = workdir / "images"
    folder.mkdir(exist_ok=True)
    folder.chmod(0o755)
    return disk_image(folder / f"{uuid.uuid4().hex[:8]}.img", "raw")


def _live_disks(uri: str, vm_id: str) -> list[tuple[str, str, str, bool]]:
    conn = libvirt.open(uri)
    try:
        return disks_of(conn.lookupByUUIDString(vm_id).XMLDesc())
    finally:
        conn.close()


def _owner(uri: str, vm_id: str) -> str:
    """The state directory hostd's metadata in the domain names: the hostd that owns it."""
    conn = libvirt.open(uri)
    try:
        dom = conn.lookupByUUIDString(vm_id)
        text = dom.metadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, METADATA_NAMESPACE)
    finally:
        conn.close()
    metadata = parse_metadata(str(text))
    assert metadata is not None and metadata.vm_id == vm_id
    return metadata.state_dir


@pytest.fixture(scope="module")
def workdir() -> Iterator[Path]:
    with scratch("vp-m-") as path:
        yield path


@pytest.fixture(scope="module")
async def hosts(
    system_libvirt: str, second_libvirt: str, guest_image: GuestImage, workdir: Path
) -> AsyncIterator[Pair]:
    guests = {
        role: guest_config(guest_image, f"mig-{role}") for role in ("moved", "stays", "orphaned")
    }
    # A read-only disk needs no shared storage: libvirt lets it migrate.
    guests["moved"].spec.disks.append(
        vm_pb2.Disk(name="seed", path=await asyncio.to_thread(_image, workdir), read_only=True)
    )
    uris = (system_libvirt, second_libvirt)
    async with booted_pair(uris, workdir, guests, TIMEOUT) as pair:
        yield pair


async def _status(call: object, code: grpc.StatusCode) -> str:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call  # type: ignore[misc]
    assert caught.value.code() == code, caught.value.details()
    return caught.value.details() or ""


async def test_a_live_migration_moves_the_guest_and_its_reports(hosts: Pair) -> None:
    a, b = hosts.a, hosts.b
    vm_id = hosts.guests["moved"].vm_id
    before = a.watch.up_reports(vm_id)[-1]
    since_a, since_b = a.watch.mark(), b.watch.mark()
    started = time.monotonic()
    moving = await a.stub.MigrateVm(b.migrate_request(vm_id))
    assert moving.vm.state == S.STATE_MIGRATING_FROM

    arriving = await b.watch.state(vm_id, S.STATE_RUNNING, since_b)
    assert state_names(arriving) == ["MIGRATING_TO", "RUNNING"]
    leaving = await a.watch.state(vm_id, S.STATE_DOWN, since_a)
    assert state_names(leaving) == ["MIGRATING_FROM", "DOWN"]
    assert leaving[-1].exit_reason == S.EXIT_REASON_MIGRATED
    wall = time.monotonic() - started

    # The guest's reports go on at the destination, from the same boot.
    landed = b.watch.after(b.watch.when(vm_id, S.STATE_RUNNING, since_b))
    report = await b.watch.report(vm_id, landed)
    uptime_before = before.guest_report.guest.uptime_seconds
    assert report.guest_report.guest.uptime_seconds >= uptime_before, "the same boot goes on"
    assert domain_exists(b.uri, vm_id)
    assert not domain_exists(a.uri, vm_id), "the domain exists only on the destination"
    assert _owner(b.uri, vm_id) == str(b.state_dir), "a restarted destination adopts it"
    seed = hosts.guests["moved"].spec.disks[0].path
    assert await asyncio.to_thread(_live_disks, b.uri, vm_id) == [("raw", seed, "vda", True)]
    listed = await b.stub.ListVms(pb.HostAgentServiceListVmsRequest())
    assert [vm.state for vm in listed.vms if vm.vm_id == vm_id] == [S.STATE_RUNNING]
    listed = await a.stub.ListVms(pb.HostAgentServiceListVmsRequest())
    assert vm_id not in [vm.vm_id for vm in listed.vms]

    sent = (
        await a.stub.GetMigrationProgress(
            pb.HostAgentServiceGetMigrationProgressRequest(vm_id=vm_id)
        )
    ).progress
    assert (sent.direction, sent.phase, sent.peer_address) == (
        P.DIRECTION_OUTGOING,
        P.PHASE_COMPLETED,
        b.address,
    )
    assert sent.data_processed_bytes > 0 and sent.end_time.seconds > 0
    received = (
        await b.stub.GetMigrationProgress(
            pb.HostAgentServiceGetMigrationProgressRequest(vm_id=vm_id)
        )
    ).progress
    assert (received.direction, received.phase) == (P.DIRECTION_INCOMING, P.PHASE_COMPLETED)
    assert received.elapsed_ms > 0, "the hypervisor's statistics, read on the destination"
    assert [m.phase for m in a.watch.migrations(vm_id, since_a)][-1] == P.PHASE_COMPLETED
    print(
        f"\nmigration (256 MiB guest): {wall:.2f} s from MigrateVm to DOWN on the source,"
        f" hypervisor job {sent.elapsed_ms} ms, downtime {sent.downtime_ms} ms"
        f" ({received.downtime_ms} ms read on the destination),"
        f" {sent.data_processed_bytes / 2**20:.0f} MiB sent;"
        f" guest uptime {uptime_before:.1f} s before,"
        f" {report.guest_report.guest.uptime_seconds:.1f} s at its first report on the destination"
    )


async def test_refusals_leave_the_vm_running(hosts: Pair) -> None:
    a, b = hosts.a, hosts.b
    vm_id = hosts.guests["stays"].vm_id
    unknown = str(uuid.uuid4())
    details = await _status(
        a.stub.MigrateVm(b.migrate_request(unknown)),
        grpc.StatusCode.NOT_FOUND,
    )
    assert unknown in details
    await _status(
        a.stub.MigrateVm(pb.HostAgentServiceMigrateVmRequest(vm_id=vm_id)),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    details = await _status(
        a.stub.MigrateVm(
            pb.HostAgentServiceMigrateVmRequest(vm_id=vm_id, destination_address=b.address)
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert details.startswith("destination_host_id: required"), details
    details = await _status(
        a.stub.CancelMigration(pb.HostAgentServiceCancelMigrationRequest(vm_id=vm_id)),
        grpc.StatusCode.FAILED_PRECONDITION,
    )
    assert details == f"cannot cancel the migration of VM {vm_id}: it is RUNNING"

    await a.stub.PauseVm(pb.HostAgentServicePauseVmRequest(vm_id=vm_id))
    details = await _status(
        a.stub.MigrateVm(b.migrate_request(vm_id)),
        grpc.StatusCode.FAILED_PRECONDITION,
    )
    assert details == f"cannot migrate VM {vm_id}: it is PAUSED"
    await a.stub.ResumeVm(pb.HostAgentServiceResumeVmRequest(vm_id=vm_id))

    nobody = f"127.0.0.1:{free_port()}"
    since = a.watch.mark()
    details = await _status(
        a.stub.MigrateVm(
            pb.HostAgentServiceMigrateVmRequest(
                vm_id=vm_id, destination_address=nobody, destination_host_id=b.host_id
            )
        ),
        grpc.StatusCode.UNAVAILABLE,
    )
    assert f"the destination hostd at {nobody} cannot be reached" in details
    assert a.watch.states(vm_id, since) == [], "the VM never left RUNNING"
    listed = await a.stub.ListVms(pb.HostAgentServiceListVmsRequest())
    assert [vm.state for vm in listed.vms if vm.vm_id == vm_id] == [S.STATE_RUNNING]
    assert domain_exists(a.uri, vm_id) and not domain_exists(b.uri, vm_id)


async def test_a_writable_disk_off_shared_storage_is_not_migrated(
    hosts: Pair, guest_image: GuestImage, workdir: Path
) -> None:
    a, b = hosts.a, hosts.b
    config = hosts.guests["unsafe"] = guest_config(
        guest_image, "mig-unsafe"
    )  # removed with the others
    vm_id = config.vm_id
    image = await asyncio.to_thread(_image, workdir)
    config.spec.disks.append(vm_pb2.Disk(name="data", path=image))
    since_a, since_b = a.watch.mark(), b.watch.mark()
    await a.stub.CreateVm(pb.HostAgentServiceCreateVmRequest(config=config))
    await a.watch.state(vm_id, S.STATE_RUNNING, since_a)  # libvirt refuses before any transfer:
    since_a = a.watch.mark()  # the guest need not have booted
    moving = await a.stub.MigrateVm(b.migrate_request(vm_id))
    assert moving.vm.state == S.STATE_MIGRATING_FROM
    states = await a.watch.state(vm_id, S.STATE_RUNNING, since_a)
    assert state_names(states) == ["MIGRATING_FROM", "RUNNING"]
    assert states[-1].message.startswith(f"migration to {b.address} failed: ")
    assert "Migration without shared storage is unsafe" in states[-1].message
    dropped = await b.watch.state(vm_id, S.STATE_DOWN, since_b)
    assert state_names(dropped) == ["MIGRATING_TO", "DOWN"]
    assert dropped[-1].exit_reason == S.EXIT_REASON_MIGRATION_FAILED
    assert await asyncio.to_thread(_live_disks, a.uri, vm_id) == [("raw", image, "vda", False)]
    await a.stub.DestroyVm(pb.HostAgentServiceDestroyVmRequest(vm_id=vm_id))


async def test_a_cancelled_migration_leaves_the_vm_on_its_source(hosts: Pair) -> None:
    a, b = hosts.a, hosts.b
    vm_id = hosts.guests["stays"].vm_id
    since_a, since_b = a.watch.mark(), b.watch.mark()
    moving = await a.stub.MigrateVm(b.migrate_request(vm_id, max_bandwidth_mib=1))
    assert moving.vm.state == S.STATE_MIGRATING_FROM
    # At 1 MiB/s the transfer takes minutes: cancel it once it is under way.
    await a.watch.until(
        "the transfer to begin",
        lambda: any(m.data_processed_bytes for m in a.watch.migrations(vm_id, since_a)),
    )
    assert state_names(b.watch.states(vm_id, since_b)) == ["MIGRATING_TO"]
    cancelling = await a.stub.CancelMigration(
        pb.HostAgentServiceCancelMigrationRequest(vm_id=vm_id)
    )
    assert cancelling.vm.state == S.STATE_MIGRATING_FROM

    states = await a.watch.state(vm_id, S.STATE_RUNNING, since_a)
    assert state_names(states) == ["MIGRATING_FROM", "RUNNING"]
    assert states[-1].message == f"migration to {b.address} cancelled"
    dropped = await b.watch.state(vm_id, S.STATE_DOWN, since_b)
    assert state_names(dropped) == ["MIGRATING_TO", "DOWN"]
    assert dropped[-1].exit_reason == S.EXIT_REASON_MIGRATION_FAILED
    progress = (
        await a.stub.GetMigrationProgress(
            pb.HostAgentServiceGetMigrationProgressRequest(vm_id=vm_id)
        )
    ).progress
    assert progress.phase == P.PHASE_CANCELLED
    assert domain_exists(a.uri, vm_id)
    await b.watch.until("the destination to let go", lambda: not domain_exists(b.uri, vm_id))
    # The guest's agent still answers on its source: a shutdown goes through it.
    since_a = a.watch.mark()
    await a.stub.ShutdownVm(pb.HostAgentServiceShutdownVmRequest(vm_id=vm_id))
    states = await a.watch.state(vm_id, S.STATE_DOWN, since_a)
    assert state_names(states) == ["POWERING_DOWN", "DOWN"]
    assert "through the guest agent" in states[0].message


async def test_a_source_hostd_killed_mid_migration_leaves_the_vm_on_its_source(
    hosts: Pair, workdir: Path
) -> None:
    a, b = hosts.a, hosts.b
    vm_id = hosts.guests["orphaned"].vm_id
    since_a, since_b = a.watch.mark(), b.watch.mark()
    await a.stub.MigrateVm(b.migrate_request(vm_id, max_bandwidth_mib=1))
    await a.watch.until(
        "the transfer to begin",
        lambda: any(m.data_processed_bytes for m in a.watch.migrations(vm_id, since_a)),
    )
    await asyncio.to_thread(a.daemon.kill)
    a.watch.stop()
    await a.channel.close(None)

    # libvirt ends a migration whose client went away; the new hostd adopts the VM.
    hosts.a = a = await start_host("a", a.identity, workdir, TIMEOUT)
    await a.watch.until(
        "the VM RUNNING on its source again",
        lambda: [s.state for s in a.watch.states(vm_id)][-1:] == [S.STATE_RUNNING],
    )
    report = await a.stub.GetRecoveryReport(pb.HostAgentServiceGetRecoveryReportRequest())
    assert vm_id in [adopted.vm_id for adopted in report.report.adopted]
    dropped = await b.watch.state(vm_id, S.STATE_DOWN, since_b)
    assert state_names(dropped) == ["MIGRATING_TO", "DOWN"]
    assert dropped[-1].exit_reason == S.EXIT_REASON_MIGRATION_FAILED
    await b.watch.until("the destination to let go", lambda: not domain_exists(b.uri, vm_id))
    assert domain_exists(a.uri, vm_id)
