"""Live migration of real guests between two hostd processes, each with its own libvirtd.

Host A is a hostd on qemu:///system, host B a hostd on the second libvirtd
(the second_libvirt fixture). Three guests boot on A together at the start:
"moved", with a read-only disk, is migrated to B; "stays" serves the cases
that leave the VM on A (refusals, an unreachable destination, a cancelled
migration); "orphaned" is left by a source hostd killed in the middle of its
migration. One more, with a writable disk on local storage, is refused by
libvirt before it has booted. Waits are on conditions with generous
deadlines; durations are printed (-s), never asserted.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import libvirt
import pytest
from virtplane.v1 import host_agent_service_pb2 as pb
from virtplane.v1 import host_agent_service_pb2_grpc as pb_grpc
from virtplane.v1 import vm_pb2

from hostd.domxml import METADATA_NAMESPACE, parse_metadata
from tests.hostd.guest_configs import guest_config
from tests.support.events import HostEvents
from tests.support.pki import TestPki
from tests.support.real import GuestImage
from tests.support.stack import Daemon, free_port, start_hostd
from tests.support.virt import (
    disk_image,
    disks_of,
    domain_exists,
    peer_uri_template,
    remove_domains,
)

S = pb.HostVm
P = pb.MigrationProgress
TIMEOUT = 240.0
"""Generous: a TCG guest reports in ~5-8 s alone; the machine is shared."""

pytestmark = pytest.mark.guest

_PKI: dict[Path, TestPki] = {}
"""The CA of each module's hosts, by its workdir."""


@dataclass
class Host:
    name: str
    uri: str
    daemon: Daemon
    channel: grpc.aio.Channel
    stub: pb_grpc.HostAgentServiceAsyncStub
    watch: HostEvents
    state_dir: Path

    @property
    def address(self) -> str:
        return self.daemon.address

    @property
    def host_id(self) -> str:
        return self.daemon.host_id


@dataclass
class Hosts:
    a: Host
    b: Host
    guests: dict[str, pb.VmConfig]


def _names(states: list[S]) -> list[str]:
    return [S.State.Name(s.state).removeprefix("STATE_") for s in states]


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
    path = Path(tempfile.mkdtemp(prefix="vp-m-", dir="/tmp"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _template(workdir: Path, system_libvirt: str, second_libvirt: str) -> str:
    """How each host's libvirt reaches the other's: derived by the source from
    the destination's host id, never taken from its answer."""
    uris = {"host-a": system_libvirt, "host-b": second_libvirt}
    return peer_uri_template(workdir / "peers", uris)


async def _host(name: str, uri: str, workdir: Path) -> Host:
    """A hostd in workdir/name, host id host-<name>, serving mutual TLS with
    an identity of the module's CA; again on the same state directory (and
    identity) when it exists."""
    folder = workdir / name
    folder.mkdir(exist_ok=True)
    folder.chmod(0o755)
    template = (workdir / "peer-template").read_text()
    daemon = await asyncio.to_thread(
        start_hostd,
        folder,
        uri,
        extra=("--peer-hypervisor-uri", template),
        pki=_PKI[workdir],
        host_id=f"host-{name}",
    )
    channel = daemon.channel()
    stub = pb_grpc.HostAgentServiceStub(channel)
    return Host(
        name, uri, daemon, channel, stub, HostEvents.of_stub(stub, TIMEOUT), folder / "hostd"
    )


@pytest.fixture(scope="module")
async def hosts(
    system_libvirt: str, second_libvirt: str, guest_image: GuestImage, workdir: Path
) -> AsyncIterator[Hosts]:
    _PKI[workdir] = TestPki(workdir / "pki")
    (workdir / "peer-template").write_text(_template(workdir, system_libvirt, second_libvirt))
    a, b = await asyncio.gather(
        _host("a", system_libvirt, workdir), _host("b", second_libvirt, workdir)
    )
    guests = {
        role: guest_config(guest_image, f"mig-{role}") for role in ("moved", "stays", "orphaned")
    }
    # A read-only disk needs no shared storage: libvirt lets it migrate.
    guests["moved"].spec.disks.append(
        vm_pb2.Disk(name="seed", path=await asyncio.to_thread(_image, workdir), read_only=True)
    )
    pair = Hosts(a, b, guests)
    try:
        await asyncio.gather(
            *(
                a.stub.CreateVm(pb.HostAgentServiceCreateVmRequest(config=c, request_id="boot"))
                for c in guests.values()
            )
        )
        try:
            await asyncio.gather(*(a.watch.report(c.vm_id, 0) for c in guests.values()))
        except BaseException:
            print(f"--- hostd a log\n{a.daemon.log_tail(60)}")
            raise
        yield pair
    finally:
        for host in (pair.a, pair.b):  # a test may have restarted one
            host.watch.stop()
            with contextlib.suppress(grpc.aio.AioRpcError):
                listed = await host.stub.ListVms(pb.HostAgentServiceListVmsRequest())
                for vm in listed.vms:
                    await host.stub.DestroyVm(pb.HostAgentServiceDestroyVmRequest(vm_id=vm.vm_id))
            await host.channel.close(None)
            await asyncio.to_thread(host.daemon.stop)
        vm_ids = [c.vm_id for c in guests.values()]
        for uri in (system_libvirt, second_libvirt):
            await asyncio.to_thread(remove_domains, uri, vm_ids)


def _to(b: Host, vm_id: str, **fields: Any) -> pb.HostAgentServiceMigrateVmRequest:
    """MigrateVm of vm_id to host b, named as the controller names it (fields change it)."""
    named = {"destination_address": b.address, "destination_host_id": b.host_id, **fields}
    return pb.HostAgentServiceMigrateVmRequest(vm_id=vm_id, **named)


async def _status(call: object, code: grpc.StatusCode) -> str:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call  # type: ignore[misc]
    assert caught.value.code() == code, caught.value.details()
    return caught.value.details() or ""


async def test_a_live_migration_moves_the_guest_and_its_reports(hosts: Hosts) -> None:
    a, b = hosts.a, hosts.b
    vm_id = hosts.guests["moved"].vm_id
    before = a.watch.up_reports(vm_id)[-1]
    since_a, since_b = a.watch.mark(), b.watch.mark()
    started = time.monotonic()
    moving = await a.stub.MigrateVm(_to(b, vm_id))
    assert moving.vm.state == S.STATE_MIGRATING_FROM

    arriving = await b.watch.state(vm_id, S.STATE_RUNNING, since_b)
    assert _names(arriving) == ["MIGRATING_TO", "RUNNING"]
    leaving = await a.watch.state(vm_id, S.STATE_DOWN, since_a)
    assert _names(leaving) == ["MIGRATING_FROM", "DOWN"]
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


async def test_refusals_leave_the_vm_running(hosts: Hosts) -> None:
    a, b = hosts.a, hosts.b
    vm_id = hosts.guests["stays"].vm_id
    unknown = str(uuid.uuid4())
    details = await _status(
        a.stub.MigrateVm(_to(b, unknown)),
        grpc.StatusCode.NOT_FOUND,
    )
    assert unknown in details
    await _status(
        a.stub.MigrateVm(pb.HostAgentServiceMigrateVmRequest(vm_id=vm_id)),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    details = await _status(
        a.stub.CancelMigration(pb.HostAgentServiceCancelMigrationRequest(vm_id=vm_id)),
        grpc.StatusCode.FAILED_PRECONDITION,
    )
    assert details == f"cannot cancel the migration of VM {vm_id}: it is RUNNING"

    await a.stub.PauseVm(pb.HostAgentServicePauseVmRequest(vm_id=vm_id))
    details = await _status(
        a.stub.MigrateVm(_to(b, vm_id)),
        grpc.StatusCode.FAILED_PRECONDITION,
    )
    assert details == f"cannot migrate VM {vm_id}: it is PAUSED"
    await a.stub.ResumeVm(pb.HostAgentServiceResumeVmRequest(vm_id=vm_id))

    nobody = f"127.0.0.1:{free_port()}"
    since = a.watch.mark()
    details = await _status(
        a.stub.MigrateVm(_to(b, vm_id, destination_address=nobody)),
        grpc.StatusCode.UNAVAILABLE,
    )
    assert f"the destination hostd at {nobody} cannot be reached" in details
    # A destination not named: its certificate names host-b, not host-c.
    details = await _status(
        a.stub.MigrateVm(_to(b, vm_id, destination_host_id="host-c")),
        grpc.StatusCode.UNAVAILABLE,
    )
    assert f"the destination hostd at {b.address} cannot be reached (as host host-c" in details
    details = await _status(
        a.stub.MigrateVm(_to(b, vm_id, destination_host_id="")),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert details.startswith("destination_host_id: required")
    assert a.watch.states(vm_id, since) == [], "the VM never left RUNNING"
    listed = await a.stub.ListVms(pb.HostAgentServiceListVmsRequest())
    assert [vm.state for vm in listed.vms if vm.vm_id == vm_id] == [S.STATE_RUNNING]
    assert domain_exists(a.uri, vm_id) and not domain_exists(b.uri, vm_id)


async def test_a_writable_disk_off_shared_storage_is_not_migrated(
    hosts: Hosts, guest_image: GuestImage, workdir: Path
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
    moving = await a.stub.MigrateVm(_to(b, vm_id))
    assert moving.vm.state == S.STATE_MIGRATING_FROM
    states = await a.watch.state(vm_id, S.STATE_RUNNING, since_a)
    assert _names(states) == ["MIGRATING_FROM", "RUNNING"]
    assert states[-1].message.startswith(f"migration to {b.address} failed: ")
    assert "Migration without shared storage is unsafe" in states[-1].message
    dropped = await b.watch.state(vm_id, S.STATE_DOWN, since_b)
    assert _names(dropped) == ["MIGRATING_TO", "DOWN"]
    assert dropped[-1].exit_reason == S.EXIT_REASON_MIGRATION_FAILED
    assert await asyncio.to_thread(_live_disks, a.uri, vm_id) == [("raw", image, "vda", False)]
    await a.stub.DestroyVm(pb.HostAgentServiceDestroyVmRequest(vm_id=vm_id))


async def test_a_cancelled_migration_leaves_the_vm_on_its_source(hosts: Hosts) -> None:
    a, b = hosts.a, hosts.b
    vm_id = hosts.guests["stays"].vm_id
    since_a, since_b = a.watch.mark(), b.watch.mark()
    moving = await a.stub.MigrateVm(_to(b, vm_id, max_bandwidth_mib_per_second=1))
    assert moving.vm.state == S.STATE_MIGRATING_FROM
    # At 1 MiB/s the transfer takes minutes: cancel it once it is under way.
    await a.watch.until(
        "the transfer to begin",
        lambda: any(m.data_processed_bytes for m in a.watch.migrations(vm_id, since_a)),
    )
    assert _names(b.watch.states(vm_id, since_b)) == ["MIGRATING_TO"]
    cancelling = await a.stub.CancelMigration(
        pb.HostAgentServiceCancelMigrationRequest(vm_id=vm_id)
    )
    assert cancelling.vm.state == S.STATE_MIGRATING_FROM

    states = await a.watch.state(vm_id, S.STATE_RUNNING, since_a)
    assert _names(states) == ["MIGRATING_FROM", "RUNNING"]
    assert states[-1].message == f"migration to {b.address} cancelled"
    dropped = await b.watch.state(vm_id, S.STATE_DOWN, since_b)
    assert _names(dropped) == ["MIGRATING_TO", "DOWN"]
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
    assert _names(states) == ["POWERING_DOWN", "DOWN"]
    assert "through the guest agent" in states[0].message


async def test_a_source_hostd_killed_mid_migration_leaves_the_vm_on_its_source(
    hosts: Hosts, workdir: Path
) -> None:
    a, b = hosts.a, hosts.b
    vm_id = hosts.guests["orphaned"].vm_id
    since_a, since_b = a.watch.mark(), b.watch.mark()
    await a.stub.MigrateVm(_to(b, vm_id, max_bandwidth_mib_per_second=1))
    await a.watch.until(
        "the transfer to begin",
        lambda: any(m.data_processed_bytes for m in a.watch.migrations(vm_id, since_a)),
    )
    await asyncio.to_thread(a.daemon.kill)
    a.watch.stop()
    await a.channel.close(None)

    # libvirt ends a migration whose client went away; the new hostd adopts the VM.
    hosts.a = a = await _host("a", a.uri, workdir)
    await a.watch.until(
        "the VM RUNNING on its source again",
        lambda: [s.state for s in a.watch.states(vm_id)][-1:] == [S.STATE_RUNNING],
    )
    report = await a.stub.GetRecoveryReport(pb.HostAgentServiceGetRecoveryReportRequest())
    assert vm_id in [adopted.vm_id for adopted in report.report.adopted]
    dropped = await b.watch.state(vm_id, S.STATE_DOWN, since_b)
    assert _names(dropped) == ["MIGRATING_TO", "DOWN"]
    assert dropped[-1].exit_reason == S.EXIT_REASON_MIGRATION_FAILED
    await b.watch.until("the destination to let go", lambda: not domain_exists(b.uri, vm_id))
    assert domain_exists(a.uri, vm_id)
