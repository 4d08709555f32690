"""MigrateVm and CancelMigration: moving an UP VM live to another host.

MigrateVm takes the runner's path (controller.lifecycle.runner). In its
first transaction the destination is chosen — the host named, or the one
the scheduler picks — by the filters and weights of a start, the VM's own
host excluded; a named destination a filter refuses is refused with that
filter's name. The VM goes MIGRATING_FROM, and its operation (host_id: the
destination) books it there: db.repositories.host_usage counts it on the
destination until the operation ends. The source hostd is then asked to
migrate it; it prepares the destination itself (hostd.migration) and
answers at once. What follows arrives as the hosts' events
(controller.lifecycle.transitions): UP on the destination ends the
operation SUCCEEDED; UP (or DOWN) on the source ends it FAILED
(controller.operations). When the source refuses, the VM is UP again
and the operation FAILED with the refusal; a source whose own cap of
outgoing migrations is still held by one that just ended (libvirt's confirm
step outlives the switch-over by about 2 s) is asked again for up to
BUSY_RETRY_SECONDS first.

Over the migration limits (controller.lifecycle.migration_limits) the
migration waits its turn: the VM stays UP, its operation RUNNING and
waiting, until controller.lifecycle.migration_queue starts it; cancelling
it then only ends its operation.

CancelMigration marks the operation cancelled (so that it ends CANCELLED
however the source's report and the answer interleave) and asks the source
to abort the transfer; the operation ends FAILED (CANCELLED) at once,
which releases the booking, and the VM is UP on its source as the source
reports it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from controller import operations, requests
from controller.errors import HostBusy, HostNotFound, IllegalVmState, NoHostAvailable
from controller.host_client import HostClient
from controller.hosts import HostClients
from controller.lifecycle import verbs
from controller.lifecycle.migration_limits import (
    InFlight,
    MigrationLimits,
    anyone_waiting,
    held_back,
    in_flight,
    waiting_of,
)
from controller.lifecycle.migration_policy import MigrationPolicy
from controller.lifecycle.placement import locked_host, placement
from controller.lifecycle.runner import Answer
from controller.lifecycle.states import set_state
from controller.lifecycle.target import HostTarget, Queued
from controller.lifecycle.transitions import apply_host_vm
from controller.lifecycle.verbs import Verb
from controller.operations import VmAndOperation
from controller.requests import Call
from controller.scheduler import Policy
from controller.vm_store import Outcome, VmStore
from db import repositories as repo
from db.enums import OperationKind, OperationState, VmState
from db.models import Host, Operation, Vm
from virtplane_common.errors import FailedPrecondition, VirtplaneError

CANCELLED = "the migration was cancelled"


class DestinationRefused(FailedPrecondition):
    """A named destination that cannot take the VM; names the filter."""

    def __init__(self, vm: str, host: str, why: str) -> None:
        super().__init__(f"cannot migrate VM {vm!r} to host {host!r}: {why}")


def choose_destination(
    session: Session,
    vm: Vm,
    source: Host,
    destination_ref: str,
    policy: Policy,
    *,
    full: frozenset[str] = frozenset(),
) -> Host:
    """The host vm migrates to: destination_ref (an id or a name) if every
    filter accepts it, else the scheduler's choice, passing over the hosts
    in full (their incoming migrations at the limit) for the best host with
    room, if one fits; the hosts stay locked until the transaction ends."""
    named = repo.find_host(session, destination_ref) if destination_ref else None
    if destination_ref and named is None:
        raise HostNotFound(destination_ref)
    if named is not None and named.id == source.id:
        raise DestinationRefused(vm.name, named.name, "it is the VM's own host")
    _hosts, judged = placement(session, vm, policy, lock=True, source_host_id=source.id)
    if named is not None:
        verdict = next(j for j in judged.judgements if j.host.id == named.id)
        if verdict.rejection is not None:
            raise DestinationRefused(vm.name, named.name, verdict.rejection)
        return named
    if judged.host is None:
        raise NoHostAvailable(vm.name, judged.rejections)
    with_room = [j for j in judged.judgements if j.eligible and j.host.id not in full]
    best = max(with_room, key=lambda j: (j.score, j.host.name), default=None)
    chosen = judged.host if best is None else best.host
    return locked_host(session, chosen.id)


def full_destinations(limits: MigrationLimits | None, counts: InFlight) -> frozenset[str]:
    """The hosts whose incoming migrations are at the limit now."""
    if limits is None:
        return frozenset()
    return frozenset(h for h, n in counts.incoming.items() if n >= limits.incoming_per_host)


def booked(vm: Vm, source: Host, destination: Host) -> HostTarget:
    """The migration of vm from source to destination begins: the VM goes
    MIGRATING_FROM; its operation's host (the destination) books it there."""
    set_state(vm, VmState.MIGRATING_FROM, message=f"migrating to host {destination.name!r}")
    return dataclasses.replace(
        HostTarget.of(vm, source),
        destination_id=destination.id,
        destination_address=destination.address,
    )


BUSY_RETRY_SECONDS = 10.0
"""How long a migration is asked again of a source whose own cap is reached."""
BUSY_RETRY_EVERY = 0.25


class MigrationWaiting(FailedPrecondition):
    def __init__(self, vm: str) -> None:
        super().__init__(f"cannot migrate VM {vm!r}: its migration waits its turn already")


@dataclass(frozen=True)
class MigrateSteps:
    """The migration as runner steps."""

    destination_ref: str
    policy: Policy
    # The transfer's cap, MiB/s; 0: none.
    max_bandwidth_mib: int = 0
    verb: Verb = verbs.MIGRATE
    # None: no limits; else a migration over them waits its turn.
    limits: MigrationLimits | None = None
    # "maintenance" for a host's evacuation (controller.maintenance),
    # "balancing" for the balancer's (controller.balancing_loop).
    cause: str = ""
    # How the transfer converges (controller.lifecycle.migration_policy).
    convergence: MigrationPolicy = dataclasses.field(default_factory=MigrationPolicy)

    def begin(self, session: Session, vm: Vm, host: Host | None) -> Outcome[HostTarget]:
        assert host is not None
        if waiting_of(session, vm.id) is not None:
            raise MigrationWaiting(vm.name)
        counts = in_flight(session) if self.limits is not None else InFlight()
        full = full_destinations(self.limits, counts)
        destination = choose_destination(
            session, vm, host, self.destination_ref, self.policy, full=full
        )
        why = self._held_back(session, counts, host, destination)
        if why:
            queued = Queued(why, self.destination_ref, self.cause, self.convergence)
            return Outcome(False, dataclasses.replace(HostTarget.of(vm, host), queued=queued))
        return Outcome(True, dataclasses.replace(booked(vm, host, destination), cause=self.cause))

    def _held_back(
        self, session: Session, counts: InFlight, source: Host, destination: Host
    ) -> str:
        if self.limits is None:
            return ""
        why = held_back(self.limits, counts, source, destination)
        if not why and anyone_waiting(session):  # first come, first served
            return "waiting: earlier migrations wait their turn"
        return why

    async def call_host(self, client: HostClient, target: HostTarget, op_id: str) -> Answer:
        # The source may still hold a slot of its own cap of outgoing
        # migrations for one the controller saw end: libvirt's confirm step
        # on the source (its QEMU gone) ends about 2 s after the VM runs on
        # the destination. Asked again until that is over.
        deadline = time.monotonic() + BUSY_RETRY_SECONDS
        while True:
            try:
                await client.migrate_vm(
                    target.vm_id,
                    target.destination_id,
                    target.destination_address,
                    self.max_bandwidth_mib,
                    self.convergence.to_host(),
                )
            except HostBusy:
                if time.monotonic() >= deadline:
                    raise
                await asyncio.sleep(BUSY_RETRY_EVERY)
            else:
                break
        # Its answer (MIGRATING_FROM) is what begin() set; the events that
        # follow may have moved the VM on already.
        return None

    def undo(self, vm: Vm, target: HostTarget, why: str) -> bool:
        if vm.state is not VmState.MIGRATING_FROM or vm.host_id != target.host_id:
            return False
        set_state(vm, VmState.UP, message="")
        return True

    def recorded_by_call(self, target: HostTarget) -> bool:
        return False

    def record(self, vm: Vm, target: HostTarget, answer: Answer) -> bool:
        return False


@dataclass(frozen=True)
class _Cancel:
    """CancelMigration's first transaction: the VM, its source, and the
    migration's operation."""

    vm_id: str
    source: HostTarget
    op_id: str


def _running_migration(session: Session, vm: Vm) -> Operation | None:
    return session.scalars(
        select(Operation).where(
            Operation.vm_id == vm.id,
            Operation.kind == OperationKind.MIGRATE_VM,
            Operation.state == OperationState.RUNNING,
        )
    ).first()


def _begin_cancel(session: Session, vm: Vm, call: Call) -> Outcome[_Cancel | str]:
    """A repeat answers with the operation's id; a new call finds the VM's
    migration under way and its source."""

    def work(session: Session) -> requests.Done[Outcome[_Cancel | str]]:
        op = _running_migration(session, vm)
        if op is not None and op.waiting:  # nothing to tell a host
            operations.failed(session, op.id, operations.CANCELLED, CANCELLED)
            return requests.Done(Outcome(False, op.id), op.id)
        source = repo.find_host(session, vm.host_id) if vm.host_id else None
        if vm.state is not VmState.MIGRATING_FROM or op is None or source is None:
            raise IllegalVmState(vm.name, vm.state.value, "cancel the migration of", "migrating")
        operations.mark_cancelled(session, op.id, CANCELLED)
        return requests.Done(
            Outcome(False, _Cancel(vm.id, HostTarget.of(vm, source), op.id)), op.id
        )

    def replay(_session: Session, prior: requests.Prior) -> Outcome[_Cancel | str]:
        return Outcome(False, prior.result_id)

    return requests.claimed(session, call, work, replay)


class Migrations:
    """CancelMigration (MigrateVm is a runner verb: MigrateSteps)."""

    def __init__(self, store: VmStore, clients: HostClients) -> None:
        self._store = store
        self._clients = clients

    async def cancel(self, vm_ref: str, call: Call) -> VmAndOperation:
        """Asks the VM's source host to cancel its migration; ends the
        migration's operation FAILED (CANCELLED), releasing the booking."""
        if call.request_id:
            prior = await self._store.db.run(lambda s: requests.lookup(s, call))
            if prior is not None:
                return await self._answer(prior.result_id)
        vm, begun = await self._store.update(vm_ref, lambda s, v: _begin_cancel(s, v, call), call)
        if isinstance(begun, str):
            return await self._answer(begun)
        source = begun.source
        client = self._clients.get(source.host_id, source.host_name, source.address)
        try:
            answer = await client.cancel_migration(source.vm_id)
        except VirtplaneError:

            def refused(session: Session) -> None:
                operations.unmark_cancelled(session, begun.op_id)
                requests.forget(session, call)

            await self._store.db.run(refused)
            raise

        def cancelled(session: Session, vm: Vm) -> Outcome[None]:
            operations.lock_vm(session, vm)
            operations.failed(session, begun.op_id, operations.CANCELLED, CANCELLED)
            return Outcome(apply_host_vm(vm, source.host_id, answer), None)

        await self._store.update(vm.id, cancelled)
        return await self._answer(begun.op_id)

    async def _answer(self, op_id: str) -> VmAndOperation:
        return await self._store.db.run(lambda s: operations.with_vm(s, op_id))
