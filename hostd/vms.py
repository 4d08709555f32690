"""The VMs of this host as one service: the create path, then the verbs, delegated.

The create path, in this order (../shared/ARCHITECTURE.md, step 5):

1. existing VM: the same id and request_id returns the VM as it is (also one
   that ended recently); another request_id is ALREADY_EXISTS. A SUSPENDED
   VM does not count: creating it restores it.
2. hibernated: a complete saved state of this VM makes the create a restore,
   with the configuration saved beside it;
3. validation: each missing or wrong field named (INVALID_ARGUMENT);
4. defaults filled in (hostd.defaults; the table is in hostd/README.md);
5. the console must be one this host offers (FAILED_PRECONDITION otherwise);
6. hand-off to the runner; the VM is returned WAIT_FOR_LAUNCH (or
   RESTORING_STATE) at once and its progress follows as events.

PrepareIncomingMigration is the create path's incoming-migration start:
the same checks (1, 3-5), then hostd.migration registers the VM
MIGRATING_TO and awaits it. MigrateVm and CancelMigration are there too.

On start, recovery adopts what a previous hostd left (hostd.recovery), then
the event pump follows libvirt.
"""

from __future__ import annotations

import logging
import re

from hostd import consoles
from hostd.config import MigrationConfig
from hostd.convergence import MigrationPolicy
from hostd.defaults import reboot_timeout, shutdown_timeout, with_defaults
from hostd.errors import VmAlreadyExists
from hostd.events import EventPump, ReachabilityListener
from hostd.guest_agent import GuestAgentQueries
from hostd.hibernation import Hibernator, SavedStates
from hostd.hook_runner import HookRunner
from hostd.hypervisor import DomainStats, Hypervisor
from hostd.journal import Journal
from hostd.migration import Migrations
from hostd.model import (
    ConsoleKind,
    MigrationDestination,
    MigrationProgress,
    PeerHost,
    RecoveryReport,
    VmConfig,
    VmState,
    VmStatus,
)
from hostd.parts import VmParts
from hostd.peers import GrpcPeers, Peers
from hostd.power import PowerVerbs
from hostd.recovery import Recovery
from hostd.registry import RunnerSettings, Vm, VmRegistry
from hostd.runner import Runner
from hostd.state_machine import DOMAIN_STATES, Verb, require
from hostd.tasks import TaskSupervisor
from hostd.validation import validate_config, validate_vm_id
from virtplane_common.errors import FailedPrecondition, InvalidArgument

log = logging.getLogger(__name__)

_HOST_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]{0,62}")
"""A host id: one DNS label (it becomes part of the name TLS checks)."""


__all__ = ["RunnerSettings", "VmService"]


class VmService:
    def __init__(
        self,
        hypervisor: Hypervisor,
        journal: Journal,
        settings: RunnerSettings,
        migration: MigrationConfig | None = None,
        peers: Peers | None = None,
    ) -> None:
        self._hypervisor = hypervisor
        self._admission = settings.admission
        self._tasks = tasks = TaskSupervisor()
        self._registry = registry = VmRegistry(hypervisor, journal, settings, tasks)
        hooks = HookRunner(hypervisor, journal, settings.hooks, tasks)
        parts = VmParts(hypervisor, registry, tasks, hooks)
        self._saved = saved = SavedStates(settings.layout)
        self._hibernator = Hibernator(parts, saved)
        self._runner = Runner(parts, saved)
        self._power = PowerVerbs(parts, self._hibernator)
        self._recovery = Recovery(parts, saved, self._hibernator)
        self._pump = EventPump(parts, self._power, self._recovery.adopt)
        self._migration_config = migration = migration or MigrationConfig()
        self._migrations = Migrations(parts, journal, migration, peers or GrpcPeers())
        self.guest_agent = GuestAgentQueries(registry)
        self.consoles: tuple[ConsoleKind, ...] = consoles.BUILDABLE
        """The consoles this host offers; known once started."""
        self.recovery_report = RecoveryReport()
        self.hooks = hooks.hooks
        """The hook scripts, for the paths that run them outside this module (migration)."""

    async def start(self) -> None:
        """Recovers what a previous hostd left, then follows events.

        Events arriving meanwhile wait in the hypervisor's queue and are applied
        after; those already reflected in the listing change nothing.
        """
        info = await self._hypervisor.host_info()
        self.consoles = consoles.supported_consoles(info.graphics)
        self.recovery_report = await self._recovery.run()
        self._pump.start()

    def watch_hypervisor(self, listener: ReachabilityListener) -> None:
        """listener(reachable, reason) is awaited each time libvirt is lost or found again."""
        self._pump.listener = listener

    @property
    def hypervisor_unreachable(self) -> str:
        """Why libvirt cannot be reached now; empty while it can."""
        return self._pump.unreachable_reason

    async def stop(self) -> None:
        """Stops following and talking to guests; the domains keep running."""
        await self._tasks.stop()

    def list(self) -> list[VmStatus]:
        return self._registry.list()

    def get(self, vm_id: str) -> VmStatus:
        return self._registry.lookup(vm_id).status()

    def registered(self) -> tuple[Vm, ...]:
        """Every VM the registry holds, as it holds it (read by hostd.metrics)."""
        return tuple(self._registry.all())

    def counts(self) -> tuple[int, int]:
        """(VMs whose domain runs, VMs hibernated here)."""
        states = [vm.state for vm in self._registry.all()]
        return (
            sum(s in DOMAIN_STATES for s in states),
            sum(s == VmState.SUSPENDED for s in states),
        )

    async def create(
        self, config: VmConfig, *, request_id: str = "", start_paused: bool = False
    ) -> VmStatus:
        """The create path; returns as soon as the VM is registered."""
        vm_id = config.vm_id
        validate_vm_id(vm_id)  # it names files and domains from here on
        await self._registry.settled(vm_id)
        existing = self._registry.get(vm_id)
        if existing is not None and existing.state != VmState.SUSPENDED:
            if request_id and existing.request_id == request_id:
                return existing.status()
            raise VmAlreadyExists(vm_id, existing.state.name)
        ended = self._registry.ended(vm_id, request_id)
        if existing is None and ended is not None:
            return ended
        saved = self._saved.load(vm_id)
        if existing is not None and saved is None:
            raise FailedPrecondition(
                f"VM {vm_id} is SUSPENDED but its saved state cannot be read; destroy it"
            )
        validate_config(saved or config, self._admission)
        filled = with_defaults(saved or config)
        consoles.check_console(filled, self.consoles)
        self._pump.require_reachable()  # else the start would fail at once
        vm = existing or Vm(config=filled)
        vm.config, vm.request_id, vm.start_paused = filled, request_id, start_paused
        if saved is not None:
            self._runner.restore(vm)
        else:
            self._runner.launch(vm)
        return vm.status()

    async def destroy(self, vm_id: str) -> None:
        vm = self._registry.get(vm_id)
        if vm is not None and vm.state == VmState.MIGRATING_FROM:
            await self._migrations.cancel(vm_id)  # the transfer ends first, then the domain
        await self._power.destroy(vm_id)

    async def shutdown(self, vm_id: str, timeout_seconds: int = 0) -> VmStatus:
        return await self._power.shutdown(vm_id, shutdown_timeout(timeout_seconds))

    async def reboot(self, vm_id: str, timeout_seconds: int = 0) -> VmStatus:
        return await self._power.reboot(vm_id, reboot_timeout(timeout_seconds))

    async def reset(self, vm_id: str) -> VmStatus:
        return await self._power.reset(vm_id)

    async def pause(self, vm_id: str) -> VmStatus:
        return await self._power.pause(vm_id)

    async def resume(self, vm_id: str) -> VmStatus:
        return await self._power.resume(vm_id)

    async def hibernate(self, vm_id: str) -> VmStatus:
        return await self._hibernator.hibernate(vm_id)

    async def stats(self, vm_id: str) -> tuple[VmStatus, DomainStats]:
        vm = self._registry.lookup(vm_id)
        require(Verb.STATS, vm_id, vm.state)
        return vm.status(), await self._hypervisor.domain_stats(vm_id)

    # -- migration

    async def prepare_incoming(
        self, config: VmConfig, source_address: str = ""
    ) -> MigrationDestination:
        """The incoming-migration start: checked as a create is, then MIGRATING_TO."""
        vm_id = config.vm_id
        validate_vm_id(vm_id)
        await self._registry.settled(vm_id)
        existing = self._registry.get(vm_id)
        if existing is not None:
            prepared = self._migrations.prepared(vm_id)
            if existing.state == VmState.MIGRATING_TO and prepared is not None:
                return prepared  # a repeated prepare
            raise VmAlreadyExists(vm_id, existing.state.name)
        validate_config(config, self._admission)
        filled = with_defaults(config)
        consoles.check_console(filled, self.consoles)
        return await self._migrations.receive(Vm(config=filled), source_address)

    async def migrate(
        self,
        vm_id: str,
        destination: PeerHost,
        max_bandwidth_mib: int = 0,
        policy: MigrationPolicy | None = None,
    ) -> VmStatus:
        address, host_id = destination.address.strip(), destination.host_id.strip()
        if not address:
            raise InvalidArgument(
                "destination_address", "required: the destination hostd's host:port"
            )
        if host_id and not _HOST_ID.fullmatch(host_id):
            raise InvalidArgument("destination_host_id", f"{host_id!r} is not a host id")
        if not host_id and self._migration_config.require_peer_id:
            raise InvalidArgument(
                "destination_host_id",
                "required: the id of the destination host, which its certificate must name",
            )
        peer = PeerHost(address, host_id)
        return await self._migrations.migrate(vm_id, peer, max_bandwidth_mib, policy)

    async def cancel_migration(self, vm_id: str) -> VmStatus:
        return await self._migrations.cancel(vm_id)

    def migration_progress(self, vm_id: str) -> MigrationProgress:
        return self._migrations.progress(vm_id)
