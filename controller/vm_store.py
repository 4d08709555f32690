"""Every change to a VM goes through here: it is written in one transaction,
given the next revision, and then published to watchers.

Revisions come from the database (db.repositories.allocate_revisions), in
the transaction that makes the change: they are unique and committed in
order, however many workers or controllers write."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from sqlalchemy.orm import Session
from virtplane.v1 import vm_pb2

from controller import audit, convert, requests
from controller.errors import VmNotFound
from controller.requests import Call
from controller.watch import Change, Kind, WatchHub
from db import repositories as repo
from db.enums import ExitReason, VmState
from db.models import Vm, utcnow
from db.session import Database

T = TypeVar("T")


# Exits after which a highly available VM is restarted: it crashed, vanished
# from its host, or its host was confirmed down. Not a stop through the API,
# nor a power-off from inside the guest (as oVirt does).
HA_EXIT_REASONS = frozenset({ExitReason.CRASHED, ExitReason.LOST, ExitReason.HOST_FENCED})


def set_state(
    vm: Vm,
    state: VmState,
    *,
    exit_reason: ExitReason | None = None,
    message: str | None = None,
) -> None:
    """Moves vm to state; a VM going DOWN leaves its host. A highly available
    VM going DOWN for a reason in HA_EXIT_REASONS gets a restart due now
    (unless one is planned already: a restart under way keeps its backoff);
    one stopped by the user or its guest gets none; one that is UP again has
    its restart count reset."""
    if vm.state is not state:
        vm.state = state
        vm.state_changed_at = utcnow()
    if exit_reason is not None:
        vm.exit_reason = exit_reason
    if message is not None:
        vm.status_message = message
    if state is VmState.DOWN:
        vm.host_id = None
        if vm.exit_reason in HA_EXIT_REASONS and vm.highly_available:
            if vm.ha_restart_at is None:
                vm.ha_restart_at = utcnow()
        elif vm.exit_reason in (ExitReason.USER_STOP, ExitReason.GUEST_SHUTDOWN):
            vm.ha_restart_at = None
            vm.ha_restart_count = 0
    elif state is VmState.UP:
        vm.ha_restart_at = None
        vm.ha_restart_count = 0


# A mutation returns whether it changed the VM, and a value for the caller.
Mutation = Callable[[Session, Vm], tuple[bool, T]]


class VmStore:
    def __init__(self, db: Database, hub: WatchHub) -> None:
        self.db = db
        self.hub = hub

    async def insert(self, build: Callable[[Session], Vm], call: Call) -> vm_pb2.Vm:
        """Adds the VM build makes; a repeat of call returns that VM."""

        def work(session: Session) -> tuple[vm_pb2.Vm, bool]:
            prior = requests.claim(session, call)
            if prior is not None:
                first = session.get(Vm, prior.result_id)
                return (convert.vm(first) if first else prior.decode(vm_pb2.Vm)), False
            vm = build(session)
            vm.revision = 0  # until stamp() gives it one, after the INSERT
            session.add(vm)
            proto = self.stamp(session, [vm])[0]
            audit.mutation(session, call, vm_id=vm.id)
            requests.remember(session, call, vm.id, proto)
            return proto, True

        proto, new = await requests.once(lambda: self.db.run(work))
        if new:
            self.hub.publish(Change(Kind.KIND_CHANGED, proto, proto.status.revision))
        return proto

    async def update(self, vm_ref: str, mutate: Mutation[T]) -> tuple[vm_pb2.Vm, T]:
        """Applies mutate to the VM named by vm_ref (id or name). mutate may
        run more than once (see db.session.Database)."""

        def work(session: Session) -> tuple[vm_pb2.Vm, bool, T]:
            vm = repo.find_vm(session, vm_ref)
            if vm is None:
                raise VmNotFound(vm_ref)
            changed, value = mutate(session, vm)
            if changed:
                return self.stamp(session, [vm])[0], changed, value
            return convert.vm(vm), changed, value

        proto, changed, value = await self.db.run(work)
        if changed:
            self.hub.publish(Change(Kind.KIND_CHANGED, proto, proto.status.revision))
        return proto, value

    async def delete(self, vm_ref: str, check: Callable[[Vm], None], call: Call) -> None:
        """Deletes the VM once check(vm) passes; a repeat of call does nothing."""

        def work(session: Session) -> vm_pb2.Vm | None:
            if requests.claim(session, call) is not None:
                return None
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
            audit.vm_deleted(session, vm, proto.status.revision)
            requests.remember(session, call, vm.id)
            return proto

        proto = await requests.once(lambda: self.db.run(work))
        if proto is not None:
            self.hub.publish(Change(Kind.KIND_DELETED, proto, proto.status.revision))

    def stamp(self, session: Session, vms: list[Vm]) -> list[vm_pb2.Vm]:
        """Gives each changed row its revision, inside the caller's transaction.

        The rows are written first and the counter taken last, as
        allocate_revisions asks, so that the counter's lock is held only for
        the end of the transaction.
        """
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

    async def snapshot(self) -> list[vm_pb2.Vm]:
        """Every VM, each with the revision it reflects."""
        return await self.db.run(lambda s: [convert.vm(v) for v in repo.list_vms(s)])
