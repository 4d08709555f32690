"""Migration's rules on the fake hypervisor: the cap, refusals, the destination's
side, and a failed migration. Two VmServices reach each other through LocalPeers
(the transport is the seam); the fake, like libvirt's test driver, cannot migrate,
so a migration that gets as far as the hypervisor fails, as a real one may.
(migrate_gate holds a migration under way, to cancel it.) Real migrations
between two libvirt daemons: test_real_migration.py.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from hostd.config import MigrationConfig
from hostd.convergence import MigrationPolicy
from hostd.errors import (
    PeerUnavailable,
    TooManyMigrations,
    VmAlreadyExists,
    VmNotFound,
    VmStateConflict,
)
from hostd.hooks import HookFailed, HookPoint, HookSettings
from hostd.hypervisor import LifecycleEvent, LifecycleKind
from hostd.journal import Journal
from hostd.layout import StateLayout
from hostd.model import (
    Disk,
    MigrationDestination,
    MigrationDirection,
    MigrationPhase,
    PeerHost,
    VmConfig,
    VmState,
    VmStatus,
)
from hostd.vms import VmService
from tests.hostd.fakes import FakeDomain, FakeHypervisor
from tests.support.hostd_rig import FAST, domain_config, hook_script, with_spec
from tests.support.waiting import until
from virtplane_common.errors import InvalidArgument, NotFound
from virtplane_common.tls.names import host_dns_name

A, B = "host-a:7070", "host-b:7070"
TO_B = PeerHost(B, "b")
B_ID = "5b1f0d3e-8c2a-4e7b-9f64-2d3c1a0e9b77"
"""B's host id, which its certificate names."""


@dataclass
class LocalPeers:
    """Other hostd in this process, called directly."""

    hosts: dict[str, VmService] = field(default_factory=dict)
    gate: asyncio.Event | None = None
    """When set, a prepare waits for it."""
    waiting: int = 0
    told: list[tuple[str, str]] = field(default_factory=list)

    async def prepare_incoming(
        self, peer: PeerHost, config: VmConfig, source_address: str
    ) -> MigrationDestination:
        address = peer.address
        if self.gate is not None:
            self.waiting += 1
            await self.gate.wait()
        host = self.hosts.get(address)
        if host is None:
            raise PeerUnavailable(f"the destination hostd at {address} cannot be reached")
        return await host.prepare_incoming(config, source_address)

    async def cancel_incoming(self, peer: PeerHost, vm_id: str) -> None:
        self.told.append((peer.address, vm_id))
        await self.hosts[peer.address].cancel_migration(vm_id)


@dataclass
class Side:
    fake: FakeHypervisor
    vms: VmService

    def state(self, vm_id: str) -> VmState:
        return {vm.vm_id: vm.state for vm in self.vms.list()}.get(vm_id, VmState.DOWN)

    async def wait_for(self, vm_id: str, state: VmState) -> VmStatus:
        await until(lambda: self.state(vm_id) == state, what=state.api_name)
        return next((vm for vm in self.vms.list() if vm.vm_id == vm_id), VmStatus(vm_id, state))


@dataclass
class Pair:
    a: Side
    b: Side
    peers: LocalPeers
    kernel: str

    async def running_on_a(self) -> VmConfig:
        config = domain_config(self.kernel)
        await self.a.vms.create(config)
        await self.a.wait_for(config.vm_id, VmState.RUNNING)
        return config


async def _side(
    root: Path,
    name: str,
    peers: LocalPeers,
    max_outgoing: int,
    *,
    tls: bool = True,
    max_incoming: int = 8,
) -> Side:
    fake = FakeHypervisor()
    layout = StateLayout(root / name)
    layout.saved_dir.mkdir(parents=True)
    layout.channels_dir.mkdir()
    config = MigrationConfig(
        max_outgoing=max_outgoing,
        max_incoming_pending=max_incoming,
        peer_hypervisor_uri=f"fake:///{'{host_id}' if tls else 'any'}?at={{address_host}}",
        own_address=f"host-{name}:7070",
        incoming_timeout_seconds=0.3,
        progress_interval_seconds=0.01,
        tls=tls,
        require_peer_id=tls,
    )
    hooks = HookSettings(root / f"hooks-{name}", 5.0)
    settings = dataclasses.replace(FAST, layout=layout, hooks=hooks)
    vms = VmService(fake, Journal(1000), settings, config, peers)
    await vms.start()
    return Side(fake, vms)


@pytest.fixture
async def pair(tmp_path: Path, boot_files: tuple[str, str]) -> AsyncIterator[Pair]:
    peers = LocalPeers()
    a = await _side(tmp_path, "a", peers, max_outgoing=2)
    b = await _side(tmp_path, "b", peers, max_outgoing=2)
    peers.hosts = {A: a.vms, B: b.vms}
    yield Pair(a, b, peers, boot_files[0])
    await asyncio.gather(a.vms.stop(), b.vms.stop())


async def test_the_destination_is_prepared_once(pair: Pair, tmp_path: Path) -> None:
    config = domain_config(pair.kernel)
    vm_id = config.vm_id
    destination = await pair.b.vms.prepare_incoming(config, A)
    assert destination.migration_uri.startswith("tcp://127.0.0.1:")
    assert destination.channel_socket_path == str(tmp_path / "b" / "channels" / f"{vm_id}.sock")
    assert destination.console_log_path == str(tmp_path / "b" / "consoles" / f"{vm_id}.log")
    assert destination.state_directory == str(tmp_path / "b")
    assert pair.b.state(vm_id) == VmState.MIGRATING_TO
    assert await pair.b.vms.prepare_incoming(config, A) == destination, "a repeat is answered"
    with pytest.raises(VmAlreadyExists, match="MIGRATING_TO"):
        await pair.b.vms.create(config, request_id="x")
    progress = pair.b.vms.migration_progress(vm_id)
    assert (progress.direction, progress.phase, progress.peer_address) == (
        MigrationDirection.INCOMING,
        MigrationPhase.TRANSFERRING,
        A,
    )


async def test_a_vm_that_never_arrives_is_dropped(pair: Pair) -> None:
    config = domain_config(pair.kernel)
    await pair.b.vms.prepare_incoming(config, A)
    down = await pair.b.wait_for(config.vm_id, VmState.DOWN)
    assert pair.b.vms.migration_progress(config.vm_id).phase == MigrationPhase.FAILED
    assert down.state == VmState.DOWN


async def test_prepared_incoming_vms_are_capped_until_one_ends(
    tmp_path: Path, boot_files: tuple[str, str]
) -> None:
    side = await _side(tmp_path, "c", LocalPeers(), max_outgoing=2, max_incoming=2)
    try:
        first, second, third = (domain_config(boot_files[0]) for _ in range(3))
        await side.vms.prepare_incoming(first, A)
        await side.vms.prepare_incoming(second, A)
        with pytest.raises(TooManyMigrations, match="2 incoming migrations, its cap"):
            await side.vms.prepare_incoming(third, A)
        with pytest.raises(VmNotFound):  # nothing of the refused one is kept
            side.vms.get(third.vm_id)
        assert await side.vms.prepare_incoming(first, A), "a repeat is no new one"
        await side.wait_for(first.vm_id, VmState.DOWN)  # never followed by a migration
        await side.vms.prepare_incoming(third, A)
        assert side.state(third.vm_id) == VmState.MIGRATING_TO
    finally:
        await side.vms.stop()


async def test_an_incoming_vm_that_lands_runs(pair: Pair) -> None:
    config = domain_config(pair.kernel)
    vm_id = config.vm_id
    await pair.b.vms.prepare_incoming(config, A)
    # What libvirt does on the destination: the domain appears paused, then resumes.
    pair.b.fake.domains[vm_id] = FakeDomain(vm_id, "vp-x", "<domain/>")
    pair.b.fake.emit(LifecycleEvent(vm_id, LifecycleKind.STARTED))
    pair.b.fake.emit(LifecycleEvent(vm_id, LifecycleKind.RESUMED))
    vm = await pair.b.wait_for(vm_id, VmState.RUNNING)
    assert vm.message == "migrated here"
    await until(
        lambda: pair.b.vms.migration_progress(vm_id).phase == MigrationPhase.COMPLETED,
        what="COMPLETED",
    )


async def test_a_failed_migration_leaves_the_vm_running_and_the_destination_clean(
    pair: Pair,
) -> None:
    config = await pair.running_on_a()
    vm_id = config.vm_id
    moving = await pair.a.vms.migrate(vm_id, TO_B)
    assert moving.state == VmState.MIGRATING_FROM
    back = await pair.a.wait_for(vm_id, VmState.RUNNING)
    assert back.message.startswith(f"migration to {B} failed: the hypervisor cannot do this")
    assert pair.peers.told == [(B, vm_id)]
    assert pair.b.state(vm_id) == VmState.DOWN
    assert pair.a.vms.migration_progress(vm_id).phase == MigrationPhase.FAILED
    assert pair.b.vms.migration_progress(vm_id).phase == MigrationPhase.CANCELLED
    assert vm_id in pair.a.fake.domains
    # The destination's libvirt is the source's own template's, never the answer's.
    assert [t.hypervisor_uri for t in pair.a.fake.migration_targets] == ["fake:///b?at=host-b"]


async def test_the_memory_goes_over_tls_to_the_named_host_only(pair: Pair) -> None:
    config = await pair.running_on_a()
    vm_id = config.vm_id
    with pytest.raises(InvalidArgument, match=r"^destination_host_id: required: "):
        await pair.a.vms.migrate(vm_id, PeerHost(B, ""))
    assert pair.a.state(vm_id) == VmState.RUNNING and pair.b.state(vm_id) == VmState.DOWN
    with pytest.raises(
        InvalidArgument, match=r"^destination_host_id: 'other.example' is not a host id"
    ):
        await pair.a.vms.migrate(vm_id, PeerHost(B, "other.example"))
    assert pair.a.fake.migration_targets == []
    await pair.a.vms.migrate(vm_id, PeerHost(B, f" {B_ID} "))
    await pair.a.wait_for(vm_id, VmState.RUNNING)  # the fake cannot migrate
    (target,) = pair.a.fake.migration_targets
    assert target.tls_destination == f"{B_ID}.hosts.virtplane" == host_dns_name(B_ID)


async def test_without_tls_no_host_id_is_needed(
    tmp_path: Path, boot_files: tuple[str, str]
) -> None:
    """--insecure-plaintext-dev: the memory goes in clear, wherever it is sent."""
    peers = LocalPeers()
    a = await _side(tmp_path, "a", peers, max_outgoing=2, tls=False)
    b = await _side(tmp_path, "b", peers, max_outgoing=2)
    peers.hosts = {A: a.vms, B: b.vms}
    try:
        config = await Pair(a, b, peers, boot_files[0]).running_on_a()
        await a.vms.migrate(config.vm_id, PeerHost(B, ""))
        await a.wait_for(config.vm_id, VmState.RUNNING)
        assert [t.tls_destination for t in a.fake.migration_targets] == [""]
    finally:
        await asyncio.gather(a.vms.stop(), b.vms.stop())


async def test_refusals_change_nothing(pair: Pair) -> None:
    config = await pair.running_on_a()
    vm_id = config.vm_id
    with pytest.raises(NotFound, match=f"migration of VM '{vm_id}' not found"):
        pair.a.vms.migration_progress(vm_id)
    with pytest.raises(InvalidArgument, match="destination_address: required"):
        await pair.a.vms.migrate(vm_id, PeerHost(" ", "b"))
    with pytest.raises(InvalidArgument, match="destination_host_id: required"):
        await pair.a.vms.migrate(vm_id, PeerHost(B, " "))
    with pytest.raises(InvalidArgument, match=r"destination_host_id: 'b/\.\./x' is not a host id"):
        await pair.a.vms.migrate(vm_id, PeerHost(B, "b/../x"))
    with pytest.raises(VmNotFound):
        await pair.a.vms.migrate("6f1c9a52-3d0e-4b7a-9a51-0c2d8e4f7b13", TO_B)
    with pytest.raises(PeerUnavailable, match="host-c:1 cannot be reached"):
        await pair.a.vms.migrate(vm_id, PeerHost("host-c:1", "c"))
    assert pair.a.state(vm_id) == VmState.RUNNING
    await pair.a.vms.pause(vm_id)
    with pytest.raises(VmStateConflict, match="it is PAUSED"):
        await pair.a.vms.migrate(vm_id, TO_B)
    with pytest.raises(VmStateConflict, match=r"cannot cancel the migration of .* it is PAUSED"):
        await pair.a.vms.cancel_migration(vm_id)


async def test_a_destination_without_the_disk_image_refuses_the_migration(
    pair: Pair, tmp_path: Path
) -> None:
    image = tmp_path / "data.img"
    image.write_bytes(b"")
    config = with_spec(domain_config(pair.kernel), disks=(Disk(name="data", path=str(image)),))
    await pair.a.vms.create(config)
    await pair.a.wait_for(config.vm_id, VmState.RUNNING)
    image.unlink()  # as on a destination that does not share the source's storage
    with pytest.raises(
        InvalidArgument,
        match=r"^config\.spec\.disks\[0\]\.path: is not an image file under hostd's image roots$",
    ):
        await pair.a.vms.migrate(config.vm_id, TO_B)
    assert pair.a.state(config.vm_id) == VmState.RUNNING
    assert pair.b.state(config.vm_id) == VmState.DOWN


async def test_outgoing_migrations_are_capped(pair: Pair) -> None:
    first, second, third = [await pair.running_on_a() for _ in range(3)]
    pair.peers.gate = asyncio.Event()
    moving = [asyncio.create_task(pair.a.vms.migrate(c.vm_id, TO_B)) for c in (first, second)]
    await until(lambda: pair.peers.waiting == 2, what="two migrations under way")
    with pytest.raises(TooManyMigrations, match="already runs 2 outgoing migrations, its cap"):
        await pair.a.vms.migrate(third.vm_id, TO_B)
    assert pair.a.state(third.vm_id) == VmState.RUNNING
    pair.peers.gate.set()
    await asyncio.gather(*moving)
    for config in (first, second):
        await pair.a.wait_for(config.vm_id, VmState.RUNNING)  # the fake cannot migrate
    pair.peers.gate = None
    assert (await pair.a.vms.migrate(third.vm_id, TO_B)).state == VmState.MIGRATING_FROM


async def test_a_cancelled_migration_runs_on_and_reports_its_progress(pair: Pair) -> None:
    config = await pair.running_on_a()
    vm_id = config.vm_id
    pair.a.fake.migrate_gate = asyncio.Event()
    await pair.a.vms.migrate(vm_id, TO_B)
    await until(
        lambda: pair.a.vms.migration_progress(vm_id).job.data_processed > 0, what="progress"
    )
    assert pair.b.state(vm_id) == VmState.MIGRATING_TO
    cancelling = await pair.a.vms.cancel_migration(vm_id)
    assert cancelling.state == VmState.MIGRATING_FROM, "the cancel returns at once"
    back = await pair.a.wait_for(vm_id, VmState.RUNNING)
    assert back.message == f"migration to {B} cancelled"
    assert pair.a.vms.migration_progress(vm_id).phase == MigrationPhase.CANCELLED
    assert pair.b.state(vm_id) == VmState.DOWN


async def test_destroying_a_migrating_vm_cancels_its_migration_first(pair: Pair) -> None:
    config = await pair.running_on_a()
    vm_id = config.vm_id
    pair.a.fake.migrate_gate = asyncio.Event()
    await pair.a.vms.migrate(vm_id, TO_B)
    await until(lambda: pair.a.fake.migrating(vm_id), what="the transfer to begin")
    await asyncio.wait_for(pair.a.vms.destroy(vm_id), 5)
    assert pair.a.state(vm_id) == VmState.DOWN
    assert vm_id not in pair.a.fake.domains
    assert pair.b.state(vm_id) == VmState.DOWN


async def test_a_failing_source_hook_refuses_the_migration_before_the_destination_is_asked(
    pair: Pair, tmp_path: Path
) -> None:
    config = await pair.running_on_a()
    seen = tmp_path / "source-hook-env"
    hook_script(
        tmp_path / "hooks-a",
        HookPoint.BEFORE_VM_MIGRATE_SOURCE,
        "10-no",
        f'echo "$VIRTPLANE_VM_ID $VIRTPLANE_HOOK_POINT" > {seen}\n'
        'grep -q "<domain" "$_hook_domxml" || exit 3\n'
        "echo 'storage not shared' >&2\nexit 1\n",
    )
    with pytest.raises(
        HookFailed, match=r"before_vm_migrate_source/10-no failed .*storage not shared"
    ):
        await pair.a.vms.migrate(config.vm_id, TO_B)
    assert seen.read_text().split() == [config.vm_id, "before_vm_migrate_source"]
    assert pair.a.state(config.vm_id) == VmState.RUNNING
    assert pair.b.state(config.vm_id) == VmState.DOWN, "the destination was never asked"
    # The slot is free again: with the hook gone, the migration goes ahead.
    (tmp_path / "hooks-a" / "before_vm_migrate_source" / "10-no").unlink()
    assert (await pair.a.vms.migrate(config.vm_id, TO_B)).state == VmState.MIGRATING_FROM


async def test_a_failing_destination_hook_refuses_the_migration(pair: Pair, tmp_path: Path) -> None:
    config = await pair.running_on_a()
    hook_script(
        tmp_path / "hooks-b",
        HookPoint.BEFORE_VM_MIGRATE_DESTINATION,
        "10-full",
        'grep -q "$VIRTPLANE_VM_ID" "$_hook_domxml" || exit 3\necho "no room here" >&2\nexit 1\n',
    )
    with pytest.raises(HookFailed, match=r"before_vm_migrate_destination/10-full .*no room here"):
        await pair.a.vms.migrate(config.vm_id, TO_B)
    assert pair.a.state(config.vm_id) == VmState.RUNNING
    assert pair.b.state(config.vm_id) == VmState.DOWN


async def test_the_policy_reaches_the_hypervisor(pair: Pair) -> None:
    config = await pair.running_on_a()
    policy = MigrationPolicy(max_downtime_ms=150, auto_converge=True, allow_post_copy=True)
    await pair.a.vms.migrate(config.vm_id, TO_B, 8, policy)
    await pair.a.wait_for(config.vm_id, VmState.RUNNING)  # the fake cannot migrate
    (target,) = pair.a.fake.migration_targets
    assert (target.max_bandwidth_mib, target.max_downtime_ms) == (8, 150)
    assert target.auto_converge and target.post_copy


async def test_a_policy_out_of_range_is_refused_naming_its_field(pair: Pair) -> None:
    config = await pair.running_on_a()
    with pytest.raises(InvalidArgument, match=r"policy\.stall_seconds"):
        await pair.a.vms.migrate(config.vm_id, TO_B, policy=MigrationPolicy(stall_seconds=-1))
    assert pair.a.state(config.vm_id) == VmState.RUNNING
    assert pair.b.state(config.vm_id) == VmState.DOWN


async def test_a_stalled_migration_is_aborted_and_runs_on_with_why(pair: Pair) -> None:
    config = await pair.running_on_a()
    vm_id = config.vm_id
    pair.a.fake.migrate_gate = asyncio.Event()
    pair.a.fake.job_remaining = 48 << 20  # never shrinks
    await pair.a.vms.migrate(vm_id, TO_B, policy=MigrationPolicy(stall_seconds=1))
    back = await pair.a.wait_for(vm_id, VmState.RUNNING)
    why = "stalled: data remaining has not shrunk below 48 MiB for 1 s"
    assert back.message == f"migration to {B} failed: {why}"
    progress = pair.a.vms.migration_progress(vm_id)
    assert (progress.phase, progress.message) == (MigrationPhase.FAILED, back.message)
    assert pair.a.fake.post_copy_started == []
    await pair.b.wait_for(vm_id, VmState.DOWN)


async def test_a_stalled_migration_switches_to_post_copy_when_allowed(pair: Pair) -> None:
    config = await pair.running_on_a()
    vm_id = config.vm_id
    pair.a.fake.migrate_gate = asyncio.Event()
    pair.a.fake.job_remaining = 3 << 19
    policy = MigrationPolicy(stall_seconds=1, allow_post_copy=True)
    await pair.a.vms.migrate(vm_id, TO_B, policy=policy)
    await until(lambda: pair.a.fake.post_copy_started == [vm_id], what="post-copy")
    progress = pair.a.vms.migration_progress(vm_id)
    assert progress.phase == MigrationPhase.TRANSFERRING
    why = "stalled: data remaining has not shrunk below 1.5 MiB for 1 s"
    assert progress.message == f"switched to post-copy: {why}"
    assert pair.a.state(vm_id) == VmState.MIGRATING_FROM, "not aborted"
    pair.a.fake.migrate_gate.set()  # the fake then fails: it cannot migrate
    await pair.a.wait_for(vm_id, VmState.RUNNING)
