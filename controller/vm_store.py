"""Every change to a VM goes through here: it is written in one transaction,
given the next revision, logged, its operations moved on, and then published
to watchers.

Before a unit of work's changes are written, stamp() calls by name what
follows from them: the audit log of the VMs created or moved to another
state (controller.audit.vm_changes) and the progress of the moved VMs'
running operations (controller.operations.progress).

Revisions come from the database (db.repositories.allocate_revisions), in
the transaction that makes the change: they are unique and committed in
order, however many workers or controllers write."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Generic, NamedTuple, TypeVar

from sqlalchemy.orm import Session
from virtplane.v1 import vm_pb2

from controller import audit, convert, operations, requests
from controller.audit import Seen, seen
from controller.errors import VmNotFound
from controller.requests import Call
from controller.watch import Change, Kind, WatchHub
from db import repositories as repo
from db.models import Vm
from db.session import Database

T = TypeVar("T")

__all__ = ["Created", "Mutation", "Outcome", "Updated", "VmStore", "seen"]


@dataclass(frozen=True)
class Outcome(Generic[T]):
    """What a mutation did: whether it changed the VM, and a value for its
    caller."""

    changed: bool
    value: T


class Updated(NamedTuple, Generic[T]):
    """The VM as a mutation left it (its row, read in the mutation's
    transaction), and the mutation's value."""

    vm: Vm
    value: T


@dataclass(frozen=True)
class Created:
    """What insert() answers: the new VM's row or, to a repeat whose VM has
    since been deleted, the answer first given, as its request id stored it."""

    row: Vm | None
    stored: requests.StoredAnswer | None = None


# A mutation may run more than once (see db.session.Database).
Mutation = Callable[[Session, Vm], Outcome[T]]


class VmStore:
    def __init__(self, db: Database, hub: WatchHub) -> None:
        self.db = db
        self.hub = hub
        # Called after each publish() of changes (controller.wakeup).
        self.listeners: list[Callable[[], None]] = []

    async def insert(self, build: Callable[[Session], Vm], call: Call) -> Created:
        """Adds the VM build makes; a repeat of call returns that VM."""

        def work(session: Session) -> requests.Done[tuple[Created, vm_pb2.Vm | None]]:
            vm = build(session)
            vm.revision = 0  # until stamp() gives it one, after the INSERT
            session.add(vm)
            proto = self.stamp(session, [vm], {}, call)[0]
            audit.mutation(session, call, vm_id=vm.id)
            return requests.Done((Created(vm), proto), vm.id, proto)

        def replay(session: Session, prior: requests.Prior) -> tuple[Created, vm_pb2.Vm | None]:
            first = session.get(Vm, prior.result_id)
            if first is None:
                return Created(None, prior.answer()), None
            return Created(first), None

        created, published = await requests.run_once(self.db, call, work, replay)
        if published is not None:
            self.hub.publish(Change(Kind.KIND_CHANGED, published, published.status.revision))
        return created

    async def update(
        self, vm_ref: str, mutate: Mutation[T], call: Call | None = None, *, lock: bool = False
    ) -> Updated[T]:
        """Applies mutate to the VM named by vm_ref (id or name); call is the
        API call whose request id the unit of work claims, if any. With lock,
        the VM's row is locked as it is read, before mutate sees it (what
        controller.operations.lock_vm does, without reading it twice)."""

        def work(session: Session) -> tuple[Vm, vm_pb2.Vm | None, Outcome[T]]:
            vm = repo.find_vm(session, vm_ref, lock=lock)
            if vm is None:
                raise VmNotFound(vm_ref)
            found = seen([vm])
            outcome = mutate(session, vm)
            if outcome.changed:
                return vm, self.stamp(session, [vm], found, call)[0], outcome
            return vm, None, outcome

        row, published, outcome = await self.db.run(work)
        if published is not None:
            self.hub.publish(Change(Kind.KIND_CHANGED, published, published.status.revision))
        return Updated(row, outcome.value)

    async def delete(self, vm_ref: str, check: Callable[[Vm], None], call: Call) -> None:
        """Deletes the VM once check(vm) passes; a repeat of call does nothing."""

        def work(session: Session) -> requests.Done[vm_pb2.Vm | None]:
            vm = repo.find_vm(session, vm_ref)
            if vm is None:
                raise VmNotFound(vm_ref)
            check(vm)
            proto = convert.vm(vm)
            audit.mutation(session, call, vm_id=vm.id)
            session.delete(vm)
            session.flush()
            proto.status.revision = repo.allocate_revisions(session)
            # The deletion's record, for the watches that resume from before it.
            audit.vm_deleted(session, vm, proto.status.revision, call.request_id)
            return requests.Done(proto, vm.id)

        proto = await requests.run_once(self.db, call, work, lambda _s, _p: None)
        if proto is not None:
            self.hub.publish(Change(Kind.KIND_DELETED, proto, proto.status.revision))

    def stamp(
        self,
        session: Session,
        vms: list[Vm],
        found: Mapping[str, Seen],
        call: Call | None = None,
    ) -> list[vm_pb2.Vm]:
        """Logs and settles the changes of vms (as found, see audit.seen) and
        gives each its revision, inside the caller's transaction.

        The rows are written first and the counter taken last, as
        allocate_revisions asks, so that the counter's lock is held only for
        the end of the transaction.
        """
        moved = audit.vm_changes(session, vms, found, call.request_id if call else "")
        operations.progress(session, moved)
        session.flush()
        if not vms:
            return []
        # A row whose only change is elsewhere (its guest facts) is not
        # locked by the flush: lock every row now, before the counter, so
        # that no transaction takes a row lock while holding the counter.
        repo.lock_vms(session, [vm.id for vm in vms])
        last = repo.allocate_revisions(session, len(vms))
        for revision, vm in enumerate(vms, start=last - len(vms) + 1):
            vm.revision = revision
        session.flush()
        return [convert.vm(vm) for vm in vms]

    def publish(self, vms: list[vm_pb2.Vm]) -> None:
        """Tells watchers about rows changed by stamp(), once committed."""
        for proto in vms:
            self.hub.publish(Change(Kind.KIND_CHANGED, proto, proto.status.revision))
        if vms:
            for listener in self.listeners:
                listener()

    async def snapshot(self) -> list[vm_pb2.Vm]:
        """Every VM, each with the revision it reflects."""
        return await self.db.run(lambda s: [convert.vm(v) for v in repo.list_vms(s)])
