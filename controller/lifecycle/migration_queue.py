"""Starting the migrations that waited their turn under the migration limits
(controller.lifecycle.migration_limits), first come first served.

Everything is in the database (the waiting operations), so a restarted
controller starts them too. The queue looks every poll_interval seconds,
and, while migrations wait or are under way, as soon as a VM changes (a
migration's end frees a slot; controller.wakeup):

1. in one transaction, admit(): walk the waiting migrations, oldest first.
   One whose VM is no longer UP on a host, or that no host can take now,
   ends FAILED with why. One that fits the limits (counting those admitted
   before it) is booked as MigrateVm books (controller.lifecycle.migrate):
   its destination chosen, the VM MIGRATING_FROM, the operation no longer
   waiting. Any other keeps waiting, its message saying for what;
2. each admitted migration is sent to its source host; a refusal ends its
   operation FAILED and the VM is UP again, as for a migration not queued.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass

from sqlalchemy.orm import Session
from virtplane.v1 import vm_pb2

from controller import operations
from controller.audit import seen
from controller.hosts import HostClients
from controller.lifecycle.migrate import (
    MigrateSteps,
    booked,
    choose_destination,
    full_destinations,
)
from controller.lifecycle.migration_limits import (
    MigrationLimits,
    anyone_waiting,
    held_back,
    in_flight,
    waiting_migrations,
)
from controller.lifecycle.migration_policy import MigrationPolicy
from controller.lifecycle.runner import status_name
from controller.lifecycle.target import HostTarget
from controller.metrics import phases
from controller.periodic import Periodic
from controller.scheduler import Policy
from controller.vm_store import Outcome, VmStore
from controller.wakeup import Wakeup
from db import repositories as repo
from db.enums import VmState
from db.models import Vm, utcnow
from virtplane_common.errors import VirtplaneError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Admitted:
    """A waiting migration whose turn came: its operation and whom to call."""

    op_id: str
    target: HostTarget
    # The convergence policy it was asked with ("": the cluster's).
    policy_json: str = ""


def admit(
    session: Session, policy: Policy, limits: MigrationLimits
) -> tuple[list[Admitted], list[Vm]]:
    """The waiting migrations that may start now, booked (see the module's
    docstring), and the VMs that changed."""
    # The hosts first, as MigrateVm locks them before it counts: the count
    # then includes every migration booked before.
    repo.lock_hosts(session)
    counts = in_flight(session)
    admitted: list[Admitted] = []
    moved: list[Vm] = []
    for op in waiting_migrations(session):
        vm = session.get(Vm, op.vm_id)
        source = repo.find_host(session, vm.host_id) if vm is not None and vm.host_id else None
        if vm is None or source is None or vm.state is not VmState.UP:
            state = vm.state.value if vm is not None else "deleted"
            why = f"the VM is {state}; only an UP VM migrates"
            operations.failed(session, op.id, "FAILED_PRECONDITION", why)
            continue
        try:
            full = full_destinations(limits, counts)
            destination = choose_destination(
                session, vm, source, op.destination_ref, policy, full=full
            )
        except VirtplaneError as exc:
            operations.failed(session, op.id, status_name(exc), str(exc))
            continue
        why = held_back(limits, counts, source, destination)
        if why:
            op.message = why
            continue
        target = booked(vm, source, destination)
        counts.add(source.id, destination.id)
        op.waiting, op.message = False, ""
        op.host_id, op.scheduled_at = destination.id, utcnow()
        phases.note(session, op.kind, "scheduled", op.created_at, op.scheduled_at)
        admitted.append(Admitted(op.id, target, op.migration_policy))
        moved.append(vm)
    return admitted, moved


class MigrationQueue:
    """The loop that starts waiting migrations when their turn comes."""

    def __init__(
        self,
        store: VmStore,
        clients: HostClients,
        policy: Policy,
        limits: MigrationLimits,
        max_bandwidth_mib: int = 0,
        *,
        convergence: MigrationPolicy | None = None,
    ) -> None:
        self._store = store
        self._clients = clients
        self._policy = policy
        self._limits = limits
        self._steps = MigrateSteps(
            "",
            policy,
            max_bandwidth_mib,
            limits=limits,
            convergence=convergence or MigrationPolicy(),
        )
        self.wakeup = Wakeup()
        self._loop = Periodic("migration-queue", self.run_once, limits.poll_interval, self.wakeup)
        store.listeners.append(self.wakeup.changed)

    def start(self) -> None:
        self._loop.start()

    async def stop(self) -> None:
        await self._loop.stop()

    async def run_once(self) -> list[str]:
        """Starts every waiting migration whose turn came; returns their
        operations' ids."""
        admitted, published, busy = await self._store.db.run(self._admit)
        self.wakeup.busy = busy
        self._store.publish(published)
        for one in admitted:
            await self._send(one)
        return [one.op_id for one in admitted]

    def _admit(self, session: Session) -> tuple[list[Admitted], list[vm_pb2.Vm], bool]:
        """The admitted migrations, the VMs changed, and whether any
        migration still waits or is under way (the queue is busy)."""
        if not anyone_waiting(session):  # the common case: no lock taken
            return [], [], in_flight(session).total > 0
        repo.lock_hosts(session)  # before the operations, as admit() takes them
        vms = [session.get(Vm, op.vm_id) for op in waiting_migrations(session)]
        found = seen([vm for vm in vms if vm is not None])
        admitted, moved = admit(session, self._policy, self._limits)
        return admitted, self._store.stamp(session, moved, found), True

    async def _send(self, one: Admitted) -> None:
        target = one.target
        client = self._clients.get(target.host_id, target.host_name, target.address)
        dispatched = utcnow()
        convergence = MigrationPolicy.from_json(one.policy_json, self._steps.convergence)
        steps = dataclasses.replace(self._steps, convergence=convergence)
        try:
            await steps.call_host(client, target, one.op_id)
        except VirtplaneError as exc:
            log.warning("migration of VM %s refused: %s", target.vm_name, exc)
            code, why = status_name(exc), str(exc)

            def refused(session: Session, vm: Vm) -> Outcome[None]:
                operations.failed(session, one.op_id, code, why)
                return Outcome(self._steps.undo(vm, target, why), None)

            await self._store.update(target.vm_id, refused)
            return

        def accepted(session: Session, vm: Vm) -> Outcome[None]:
            operations.lock_vm(session, vm)
            operations.accepted(session, one.op_id, dispatched, vm)
            return Outcome(False, None)

        await self._store.update(target.vm_id, accepted)
