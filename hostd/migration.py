"""Live migration between two hostd: the outgoing side (MigrateVm, CancelMigration)
and the incoming start path (PrepareIncomingMigration), with their progress.

The flow, source S and destination D (each a hostd with its own libvirt):

1. MigrateVm on S: the VM must be RUNNING and S below its cap of outgoing
   migrations (MigrationConfig.max_outgoing; beyond it RESOURCE_EXHAUSTED).
   S asks D's hostd to PrepareIncomingMigration with the VM's configuration;
   an unreachable or refusing D fails the call, the VM untouched.
2. D registers the VM MIGRATING_TO and answers where to send it: a
   migration URI (tcp://ADDRESS:PORT, a free port) and its own paths for the
   VM's channel socket and console log. The libvirt URI of D is S's to
   derive from its own settings (MigrationConfig.peer_hypervisor_uri), never
   taken from D's answer. S dials D's hostd over mutual TLS with its own
   host certificate and accepts only the host id MigrateVm named.
3. S moves the VM to MIGRATING_FROM, returns, and lets the hypervisor copy
   the memory (the domain XML retargeted to D's paths), reporting progress
   about once a second as migration events. Each sample is judged by the
   call's MigrationPolicy (hostd.convergence): a stalled migration switches
   to post-copy when allowed (the progress' message says so), else it is
   aborted and fails with why.
4. It lands: D's domain resumes and D takes the VM over as RUNNING, its
   guest channel connected to the domain's new socket (the guest's reports
   go on there); S sees its domain stop as MIGRATED and the VM goes DOWN
   with exit reason MIGRATED. Both record the migration COMPLETED, with the
   hypervisor's statistics (downtime included).
5. If it fails or is cancelled (CancelMigration on S aborts the hypervisor's
   job), the domain runs on on S: the VM is RUNNING again there, and S tells
   D, which removes what it prepared (CancelMigration on D). D also gives up
   by itself when no migration arrives within MigrationConfig.incoming_timeout_seconds.

The memory goes over QEMU's native TLS (MigrationConfig.tls): MigrateVm names
the destination's host id, S's QEMU accepts only a destination whose
certificate carries that id's DNS name (virtplane_common.tls.names), and D's
QEMU only a source with a certificate of the same CA (hostd.qemu_tls writes
each host's pair where its QEMU reads it).

Hooks: before_vm_migrate_source runs on S before D is asked to prepare,
with the running domain's XML; before_vm_migrate_destination runs on D
before it registers the VM, with the XML a start there would define. Either
failing refuses the migration (FAILED_PRECONDITION naming the hook) and the
VM runs on on S. The XML they leave is not applied: the migrating domain's
XML is the source's, retargeted to D's paths.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import socket
import time
from collections import OrderedDict
from dataclasses import dataclass, field

from hostd import domxml
from hostd.builder import build_domain
from hostd.config import MigrationConfig
from hostd.convergence import Convergence, MigrationPolicy, Verdict
from hostd.errors import (
    DomainNotFound,
    DomainStateConflict,
    JobAborted,
    TooManyMigrations,
    VmStateConflict,
)
from hostd.hooks import HookPoint
from hostd.hypervisor import (
    DomainAction,
    DomainInfo,
    DomainState,
    JobProgress,
    MigrationTarget,
)
from hostd.journal import Journal
from hostd.model import (
    ExitReason,
    MigrationDestination,
    MigrationDirection,
    MigrationPhase,
    MigrationProgress,
    PeerHost,
    VmState,
    VmStatus,
)
from hostd.parts import VmParts
from hostd.peers import Peers, peer_hypervisor_uri
from hostd.registry import Vm
from hostd.state_machine import Verb, require
from virtplane_common.errors import InvalidArgument, NotFound, VirtplaneError
from virtplane_common.tls.names import host_dns_name

log = logging.getLogger(__name__)

_HOST_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]{0,62}")
"""A host id: one DNS label of the name its certificate carries."""
REMEMBERED = 1024
"""How many ended migrations GetMigrationProgress still answers for."""
ABORT_RETRY_SECONDS = 0.1
ABORT_PATIENCE_SECONDS = 10.0
"""How long a cancel keeps trying while the hypervisor's job is not yet (or no longer) there."""
STATS_TRIES = 30
"""Reads of a landed migration's statistics before the destination does without them."""


@dataclass
class Migration:
    """One migration of one VM, as this host sees it."""

    vm_id: str
    direction: MigrationDirection
    peer_address: str
    peer_host_id: str = ""
    phase: MigrationPhase = MigrationPhase.TRANSFERRING
    started_ns: int = field(default_factory=time.time_ns)
    ended_ns: int = 0
    progress: JobProgress = field(default_factory=JobProgress)
    message: str = ""
    cancelled: bool = False
    destination: MigrationDestination | None = None
    """Where the VM is sent (outgoing) or is awaited (incoming)."""
    policy: MigrationPolicy = field(default_factory=MigrationPolicy)
    gave_up: str = ""
    """Why its policy (hostd.convergence) has it aborted: a failure, not a cancel."""

    @property
    def over(self) -> bool:
        return self.phase != MigrationPhase.TRANSFERRING

    def end(self, phase: MigrationPhase, message: str = "") -> None:
        self.phase, self.message, self.ended_ns = phase, message, time.time_ns()

    def snapshot(self) -> MigrationProgress:
        return MigrationProgress(
            self.vm_id,
            self.direction,
            self.phase,
            self.peer_address,
            self.started_ns,
            self.ended_ns,
            self.progress,
            self.message,
        )


class Migrations:
    def __init__(
        self, parts: VmParts, journal: Journal, config: MigrationConfig, peers: Peers
    ) -> None:
        self._hypervisor, self._registry = parts.hypervisor, parts.registry
        self._tasks, self._hooks = parts.tasks, parts.hooks
        self._journal = journal
        self._config = config
        self._peers = peers
        self._records: OrderedDict[str, Migration] = OrderedDict()
        self._outgoing: set[str] = set()
        """VMs whose outgoing migration holds one of the cap's slots."""

    def progress(self, vm_id: str) -> MigrationProgress:
        record = self._records.get(vm_id)
        if record is None:
            raise NotFound("migration of VM", vm_id)
        return record.snapshot()

    # -- the source

    async def migrate(
        self,
        vm_id: str,
        peer: PeerHost,
        max_bandwidth_mib: int = 0,
        policy: MigrationPolicy | None = None,
    ) -> VmStatus:
        """Prepares the destination, then sends the VM in the background under
        policy (hostd.convergence); returns it MIGRATING_FROM. With
        MigrationConfig.tls the memory goes over QEMU's TLS to the host whose
        certificate names the peer's host id, and nowhere else."""
        policy = (policy or MigrationPolicy()).check()
        tls_destination = self._tls_destination(peer.host_id)
        address = peer.address
        hypervisor_uri = peer_hypervisor_uri(self._config.peer_hypervisor_uri, peer)
        vm = self._registry.lookup(vm_id)
        await self._registry.idle(vm)
        async with vm.lock:
            require(Verb.MIGRATE, vm_id, vm.state)
            if len(self._outgoing) >= self._config.max_outgoing:
                raise TooManyMigrations(
                    f"cannot migrate VM {vm_id}: this host already runs "
                    f"{len(self._outgoing)} outgoing migrations, its cap; "
                    "try again when one has ended"
                )
            self._outgoing.add(vm_id)
            try:
                await self._hooks.before(vm, HookPoint.BEFORE_VM_MIGRATE_SOURCE)
                destination = await self._peers.prepare_incoming(
                    peer, vm.config, self._config.own_address
                )
            except BaseException:
                self._outgoing.discard(vm_id)
                raise
            if not self._registry.is_current(vm) or vm.state != VmState.RUNNING:
                self._outgoing.discard(vm_id)
                await self._tell_destination(peer, vm_id)
                raise VmStateConflict(Verb.MIGRATE.value, vm_id, vm.state.name)
            record = Migration(
                vm_id, MigrationDirection.OUTGOING, address, peer.host_id, destination=destination
            )
            record.policy = policy
            self._keep(record)
            target = MigrationTarget(
                hypervisor_uri=hypervisor_uri,
                migration_uri=destination.migration_uri,
                channel_socket=destination.channel_socket_path,
                console_log=destination.console_log_path,
                state_dir=destination.state_directory,
                persistent=vm.persistent,
                max_bandwidth_mib=max_bandwidth_mib,
                tls_destination=tls_destination,
                max_downtime_ms=policy.max_downtime_ms,
                auto_converge=policy.auto_converge,
                post_copy=policy.allow_post_copy,
            )
            self._registry.transition(vm, VmState.MIGRATING_FROM, message=f"migrating to {address}")
            self._publish(record)
            vm.job = self._tasks.spawn(self._send(vm, record, target), f"migrate {vm_id}")
        return vm.status()

    def _tls_destination(self, host_id: str) -> str:
        """The name QEMU checks in the destination's certificate; empty without TLS.
        VmService.migrate has checked the host id already."""
        if not self._config.tls:
            return ""
        if not host_id:
            raise InvalidArgument(
                "destination_host_id",
                "required: the destination's host id, which its certificate names",
            )
        return host_dns_name(host_id)

    async def _send(self, vm: Vm, record: Migration, target: MigrationTarget) -> None:
        poller = self._tasks.spawn(self._poll(vm, record), f"migration progress {vm.vm_id}")
        try:
            if record.cancelled:
                raise JobAborted("cancelled before the transfer began")
            landed = await self._hypervisor.migrate(vm.vm_id, target)
        except JobAborted:
            if record.gave_up:
                await self._back(vm, record, MigrationPhase.FAILED, f"failed: {record.gave_up}")
            else:
                await self._back(vm, record, MigrationPhase.CANCELLED, "cancelled")
        except VirtplaneError as exc:
            log.warning("VM %s: migration to %s failed: %s", vm.vm_id, record.peer_address, exc)
            await self._back(vm, record, MigrationPhase.FAILED, f"failed: {exc}")
        except Exception as exc:  # a bug: the VM must not stay MIGRATING_FROM
            log.exception("VM %s: migration to %s failed", vm.vm_id, record.peer_address)
            await self._back(vm, record, MigrationPhase.FAILED, f"failed: internal error: {exc}")
        else:
            await self._sent(vm, record, landed)
        finally:
            poller.cancel()
            self._outgoing.discard(vm.vm_id)

    async def _sent(self, vm: Vm, record: Migration, landed: JobProgress) -> None:
        record.progress = landed
        record.end(MigrationPhase.COMPLETED, record.message)  # post-copy's, if it switched
        self._publish(record)
        log.info(
            "VM %s: migrated to %s in %d ms, downtime %d ms",
            vm.vm_id,
            record.peer_address,
            landed.elapsed_ms,
            landed.downtime_ms,
        )
        grace = self._registry.settings.event_grace_seconds
        if not await self._registry.wait_until(
            vm, lambda v: v.state != VmState.MIGRATING_FROM, grace
        ):
            self._registry.transition(
                vm, VmState.DOWN, ExitReason.MIGRATED, f"migrated to {record.peer_address}"
            )

    async def _back(self, vm: Vm, record: Migration, phase: MigrationPhase, outcome: str) -> None:
        """The migration did not happen: the destination lets go, the VM runs on here."""
        message = f"migration to {record.peer_address} {outcome}"
        record.end(phase, message)
        self._publish(record)
        await self._tell_destination(PeerHost(record.peer_address, record.peer_host_id), vm.vm_id)
        domain = next((d for d in await self._list() if d.uuid == vm.vm_id and d.active), None)
        if not self._registry.is_current(vm) or vm.state != VmState.MIGRATING_FROM:
            return
        if domain is None:
            return  # it stopped meanwhile: its stop event makes the VM DOWN
        paused = domain.state is DomainState.PAUSED
        self._registry.transition(
            vm, VmState.PAUSED if paused else VmState.RUNNING, message=message
        )

    async def _tell_destination(self, peer: PeerHost, vm_id: str) -> None:
        try:
            await self._peers.cancel_incoming(peer, vm_id)
        except VirtplaneError as exc:
            # It also gives up by itself when nothing arrives.
            log.info("VM %s: the destination %s was not told: %s", vm_id, peer.address, exc)

    async def _poll(self, vm: Vm, record: Migration) -> None:
        clock = asyncio.get_running_loop().time
        convergence = Convergence(record.policy, clock())
        while not record.over:
            await asyncio.sleep(self._config.progress_interval_seconds)
            try:
                progress = await self._hypervisor.job_progress(vm.vm_id)
            except VirtplaneError:
                continue
            if progress is not None and not record.over:
                record.progress = progress
                verdict = convergence.observe(progress.data_remaining, clock())
                if verdict is not Verdict.GO_ON:
                    await self._steer(vm, record, verdict, convergence.reason)
                self._publish(record)

    async def _steer(self, vm: Vm, record: Migration, verdict: Verdict, reason: str) -> None:
        """Acts on the policy's verdict: post-copy, or abort (a failure, not a cancel)."""
        if verdict is Verdict.POST_COPY:
            try:
                await self._hypervisor.act(vm.vm_id, DomainAction.START_POST_COPY)
            except VirtplaneError as exc:
                reason = f"{reason}; cannot switch to post-copy: {exc}"
            else:
                record.message = f"switched to post-copy: {reason}"
                log.info("VM %s: migration %s", vm.vm_id, record.message)
                return
        log.warning("VM %s: migration to %s aborted: %s", vm.vm_id, record.peer_address, reason)
        record.gave_up = reason
        self._tasks.spawn(self._abort(vm, record), f"abort migration {vm.vm_id}")

    async def cancel(self, vm_id: str) -> VmStatus:
        """Cancels the VM's migration, outgoing or incoming; returns at once."""
        vm = self._registry.lookup(vm_id)
        require(Verb.CANCEL_MIGRATION, vm_id, vm.state)
        if vm.state == VmState.MIGRATING_TO:
            await self._drop_incoming(vm, "cancelled by its source")
            return vm.status()
        record = self._records.get(vm_id)
        if record is not None and not record.over:
            record.cancelled = True
            self._tasks.spawn(self._abort(vm, record), f"abort migration {vm_id}")
        return vm.status()

    async def _abort(self, vm: Vm, record: Migration) -> None:
        """Aborts the hypervisor's job; retries while it has not begun yet."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + ABORT_PATIENCE_SECONDS
        while not record.over and loop.time() < deadline:
            try:
                await self._hypervisor.act(vm.vm_id, DomainAction.ABORT_JOB)
                return
            except (DomainStateConflict, DomainNotFound):
                await asyncio.sleep(ABORT_RETRY_SECONDS)
            except VirtplaneError as exc:
                log.warning("VM %s: cannot cancel its migration: %s", vm.vm_id, exc)
                return

    # -- the destination

    async def receive(self, vm: Vm, source_address: str) -> MigrationDestination:
        """Registers a VM (validated, with its defaults) as MIGRATING_TO and waits for it
        in the background; returns where its source sends it."""
        self._check_incoming_room(vm.vm_id)
        settings = self._registry.settings
        if self._hooks.hooks.scripts(HookPoint.BEFORE_VM_MIGRATE_DESTINATION):
            domain = build_domain(vm.config, settings.virt_type, settings.layout)
            await self._hooks.hooks.check(
                HookPoint.BEFORE_VM_MIGRATE_DESTINATION, vm.hook_vm, domxml.to_xml(domain)
            )
        layout = settings.layout
        address = self._config.address
        destination = MigrationDestination(
            migration_uri=f"tcp://{address}:{_free_port(address)}",
            channel_socket_path=str(layout.channel_socket(vm.vm_id)),
            console_log_path=str(layout.console_log(vm.vm_id)),
            state_directory=str(layout.root),
        )
        with contextlib.suppress(FileNotFoundError):
            layout.channel_socket(vm.vm_id).unlink()  # a stale one would stop libvirt binding it
        record = Migration(
            vm.vm_id, MigrationDirection.INCOMING, source_address, destination=destination
        )
        self._keep(record)
        self._registry.add(vm)
        source = source_address or "another host"
        self._registry.transition(vm, VmState.MIGRATING_TO, message=f"arriving from {source}")
        self._publish(record)
        self._tasks.spawn(self._await_landing(vm, record), f"incoming {vm.vm_id}")
        return destination

    def _check_incoming_room(self, vm_id: str) -> None:
        pending = sum(
            1
            for r in self._records.values()
            if r.direction == MigrationDirection.INCOMING and not r.over
        )
        if pending >= self._config.max_incoming_pending:
            raise TooManyMigrations(
                f"cannot receive VM {vm_id}: this host already waits for {pending} "
                "incoming migrations, its cap; try again when one has ended"
            )

    def prepared(self, vm_id: str) -> MigrationDestination | None:
        """The destination already prepared for an incoming VM (a repeated prepare)."""
        record = self._records.get(vm_id)
        if record is None or record.over or record.direction != MigrationDirection.INCOMING:
            return None
        return record.destination

    async def _await_landing(self, vm: Vm, record: Migration) -> None:
        timeout = self._config.incoming_timeout_seconds
        while not await self._registry.wait_until(
            vm, lambda v: v.state != VmState.MIGRATING_TO, timeout
        ):
            if any(d.uuid == vm.vm_id and d.active for d in await self._list()):
                continue  # under way: the hypervisor reports how it ends
            if self._registry.is_current(vm) and vm.state == VmState.MIGRATING_TO:
                self._registry.transition(
                    vm,
                    VmState.DOWN,
                    ExitReason.MIGRATION_FAILED,
                    f"no migration arrived within {timeout:g} s",
                )
        if self._registry.is_current(vm) and vm.state != VmState.DOWN:
            vm.launched = True
            record.progress = await self._completed_job(vm.vm_id) or record.progress
            record.end(MigrationPhase.COMPLETED)
            log.info("VM %s: migrated here from %s", vm.vm_id, record.peer_address)
        elif not record.over:
            record.end(
                MigrationPhase.CANCELLED if record.cancelled else MigrationPhase.FAILED, vm.message
            )
        self._publish(record)

    async def _completed_job(self, vm_id: str) -> JobProgress | None:
        """The landed migration's statistics: libvirt files them shortly after the
        domain resumes here."""
        for _ in range(STATS_TRIES):
            try:
                landed = await self._hypervisor.job_progress(vm_id, completed=True)
            except VirtplaneError as exc:
                log.info("VM %s: no statistics of its migration: %s", vm_id, exc)
                return None
            if landed is not None:
                return landed
            await asyncio.sleep(ABORT_RETRY_SECONDS)
        return None

    async def _drop_incoming(self, vm: Vm, message: str) -> None:
        record = self._records.get(vm.vm_id)
        if record is not None and not record.over:
            record.cancelled = True
            record.end(MigrationPhase.CANCELLED, message)
        vm.destroying = True
        # Nothing may have arrived, or libvirt removed it already.
        with contextlib.suppress(DomainNotFound, DomainStateConflict):
            await self._hypervisor.act(vm.vm_id, DomainAction.DESTROY)
        if self._registry.is_current(vm):
            self._registry.transition(vm, VmState.DOWN, ExitReason.MIGRATION_FAILED, message)

    # -- helpers

    async def _list(self) -> list[DomainInfo]:
        try:
            return await self._hypervisor.list_domains()
        except VirtplaneError as exc:
            log.warning("cannot list domains: %s", exc)
            return []

    def _keep(self, record: Migration) -> None:
        self._records.pop(record.vm_id, None)
        self._records[record.vm_id] = record
        while len(self._records) > REMEMBERED:
            self._records.popitem(last=False)

    def _publish(self, record: Migration) -> None:
        self._journal.append_migration(record.snapshot())


def _free_port(address: str) -> int:
    """A TCP port free on address now, for the hypervisor to receive on."""
    with socket.socket(socket.AF_INET6 if ":" in address else socket.AF_INET) as probe:
        probe.bind((address, 0))
        return int(probe.getsockname()[1])
