"""The verbs on a VM placed on a host — stop, shutdown, reboot, reset,
pause, resume (un-pause) and hibernate — as steps of the runner
(controller.lifecycle.runner), and VmVerbs, every verb's entry point.

Stop powers the VM off at once: it is POWERING_DOWN until the host has
destroyed the domain, then DOWN (USER_STOP); a SUSPENDED VM's saved state
is deleted. The other verbs ask the host and record the state it answers
with; what follows (DOWN after a shutdown, UP again after a reboot,
SUSPENDED after a hibernation) arrives as the host's events, and ends the
operation (controller.operations).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from sqlalchemy.orm import Session
from virtplane.v1 import host_agent_service_pb2 as agent_pb2
from virtplane.v1 import vm_service_pb2 as vm_api

from controller.errors import VmNotFound
from controller.host_client import HostClient
from controller.hosts import HostClients
from controller.lifecycle import verbs
from controller.lifecycle.migrate import MigrateSteps, Migrations
from controller.lifecycle.migration_limits import MigrationLimits
from controller.lifecycle.migration_policy import MigrationPolicy
from controller.lifecycle.placement import Starter
from controller.lifecycle.runner import Answer, VerbRunner
from controller.lifecycle.start import StartSteps
from controller.lifecycle.states import set_state
from controller.lifecycle.target import HostTarget
from controller.lifecycle.transitions import apply_host_vm
from controller.lifecycle.verbs import Verb
from controller.operations import VmAndOperation
from controller.requests import Call
from controller.vm_store import Outcome, VmStore
from db.enums import VmState
from db.models import Host, Vm

log = logging.getLogger(__name__)

HostCall = Callable[[HostClient, str], Awaitable[agent_pb2.HostVm]]


@dataclass(frozen=True)
class OnHostSteps:
    """A verb the VM's host carries out on its domain; the VM takes the
    state the host answers with."""

    verb: Verb
    host_call: HostCall

    def begin(self, session: Session, vm: Vm, host: Host | None) -> Outcome[HostTarget]:
        assert host is not None
        return Outcome(False, HostTarget.of(vm, host))

    async def call_host(self, client: HostClient, target: HostTarget, op_id: str) -> Answer:
        return await self.host_call(client, target.vm_id)

    def undo(self, vm: Vm, target: HostTarget, why: str) -> bool:
        return False

    def recorded_by_call(self, target: HostTarget) -> bool:
        return False

    def record(self, vm: Vm, target: HostTarget, answer: Answer) -> bool:
        assert answer is not None
        return apply_host_vm(vm, target.host_id, answer)


@dataclass(frozen=True)
class StopSteps:
    """Powering the VM off: POWERING_DOWN while its host destroys the
    domain, DOWN (USER_STOP) once it has; back to its previous state when
    the host refuses."""

    verb: Verb = verbs.STOP

    def begin(self, session: Session, vm: Vm, host: Host | None) -> Outcome[HostTarget]:
        assert host is not None
        target = HostTarget.of(vm, host, previous=vm.state)
        set_state(vm, VmState.POWERING_DOWN)
        return Outcome(True, target)

    async def call_host(self, client: HostClient, target: HostTarget, op_id: str) -> Answer:
        try:
            await client.destroy_vm(target.vm_id)
        except VmNotFound:
            log.info("VM %s was already gone from host %s", target.vm_name, target.host_name)
        return None

    def undo(self, vm: Vm, target: HostTarget, why: str) -> bool:
        if vm.state is not VmState.POWERING_DOWN or target.previous is None:
            return False
        set_state(vm, target.previous)
        return True

    def recorded_by_call(self, target: HostTarget) -> bool:
        return False

    def record(self, vm: Vm, target: HostTarget, answer: Answer) -> bool:
        if vm.state is VmState.POWERING_DOWN and vm.host_id == target.host_id:
            set_state(vm, VmState.DOWN, exit_reason=self.verb.exit_reason, message="")
            return True
        return False


class VmVerbs:
    """StartVm, StopVm and the power verbs, each through the runner."""

    def __init__(
        self,
        store: VmStore,
        clients: HostClients,
        starter: Starter,
        migration_mib_s: int = 0,
        limits: MigrationLimits | None = None,
        *,
        convergence: MigrationPolicy | None = None,
    ) -> None:
        self._runner = VerbRunner(store, clients)
        self._convergence = convergence or MigrationPolicy()
        self._start = StartSteps(starter)
        self._starter = starter
        self._migration_mib_s = migration_mib_s
        self._limits = limits
        self._migrations = Migrations(store, clients)

    async def start(self, vm_ref: str, call: Call) -> VmAndOperation:
        """Places a DOWN VM on a host, books its resources there, and asks
        the host to run it, on another host when one refuses
        (controller.lifecycle.placement); restores a SUSPENDED VM on the
        host that holds its saved state; resumes a PAUSED one
        (controller.lifecycle.restore). Returns once a host has accepted,
        with the operation that follows the VM until it is UP."""
        return await self._runner.run(vm_ref, call, self._start)

    async def stop(self, vm_ref: str, call: Call) -> VmAndOperation:
        """Powers the VM off at once (a SUSPENDED VM's saved state is deleted)."""
        return await self._runner.run(vm_ref, call, StopSteps())

    async def shutdown(self, vm_ref: str, timeout_seconds: int, call: Call) -> VmAndOperation:
        steps = OnHostSteps(verbs.SHUTDOWN, lambda c, i: c.shutdown_vm(i, timeout_seconds))
        return await self._runner.run(vm_ref, call, steps)

    async def reboot(self, vm_ref: str, timeout_seconds: int, call: Call) -> VmAndOperation:
        steps = OnHostSteps(verbs.REBOOT, lambda c, i: c.reboot_vm(i, timeout_seconds))
        return await self._runner.run(vm_ref, call, steps)

    async def reset(self, vm_ref: str, call: Call) -> VmAndOperation:
        return await self._runner.run(vm_ref, call, OnHostSteps(verbs.RESET, _reset))

    async def pause(self, vm_ref: str, call: Call) -> VmAndOperation:
        return await self._runner.run(vm_ref, call, OnHostSteps(verbs.PAUSE, _pause))

    async def resume(self, vm_ref: str, call: Call) -> VmAndOperation:
        """Un-pauses a PAUSED VM."""
        return await self._runner.run(vm_ref, call, OnHostSteps(verbs.RESUME, _resume))

    async def hibernate(self, vm_ref: str, call: Call) -> VmAndOperation:
        """Saves the VM's memory to a file on its host: SAVING_STATE, then
        SUSPENDED. The VM keeps its host, where StartVm restores it."""
        return await self._runner.run(vm_ref, call, OnHostSteps(verbs.HIBERNATE, _hibernate))

    async def migrate(
        self,
        vm_ref: str,
        destination: str,
        call: Call,
        cause: str = "",
        policy: vm_api.MigrationPolicy | None = None,
    ) -> VmAndOperation:
        """Moves an UP VM live to destination (a host id or name), or to the
        host the scheduler picks (controller.lifecycle.migrate); over the
        migration limits it waits its turn. cause: who asked, if not a
        client ("maintenance"); policy: the call's own convergence settings
        over the cluster's (controller.lifecycle.migration_policy)."""
        steps = MigrateSteps(
            destination,
            self._starter.policy,
            self._migration_mib_s,
            limits=self._limits,
            cause=cause,
            convergence=self._convergence.overridden(policy),
        )
        return await self._runner.run(vm_ref, call, steps)

    async def cancel_migration(self, vm_ref: str, call: Call) -> VmAndOperation:
        return await self._migrations.cancel(vm_ref, call)


async def _reset(client: HostClient, vm_id: str) -> agent_pb2.HostVm:
    return await client.reset_vm(vm_id)


async def _pause(client: HostClient, vm_id: str) -> agent_pb2.HostVm:
    return await client.pause_vm(vm_id)


async def _resume(client: HostClient, vm_id: str) -> agent_pb2.HostVm:
    return await client.resume_vm(vm_id)


async def _hibernate(client: HostClient, vm_id: str) -> agent_pb2.HostVm:
    return await client.hibernate_vm(vm_id)
