"""Operations: a long-running verb on a VM, its phases and its end.

A verb begins its operation in the transaction that takes the VM's request
(begin()); the verb records when it dispatched the request and when the
host accepted it (accepted()). From then on the VM's state decides: every
unit of work that moves a VM (whoever moves it: the verb, the host monitor,
a host verb) also moves the VM's running operations, as the VM store calls
progress() before it writes the change (controller.vm_store). So the monitor
completes the phases as the host's events come in, without knowing about
operations.

What ends an operation is its verb's row in the table of verbs
(controller.lifecycle.verbs).

Success and failure count only once the host has accepted the request;
before that, the verb itself ends the operation when the host refuses.

A migration over the migration limits waits its turn (queue(); started by
controller.lifecycle.migration_queue).

After a controller restart (recover()): an operation the host had accepted
goes on — it ends as above, as the monitor learns the VM's state from the
host; so does a start booked on a host, which the starter sends again with
the same key; any other the host had not accepted yet ends FAILED ("the
controller restarted before the host accepted the request"), as nobody will
send it.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import NamedTuple

from sqlalchemy import select
from sqlalchemy.orm import Session

from controller import audit
from controller.errors import VmNotFound
from controller.lifecycle.target import Queued
from controller.lifecycle.verbs import BY_KIND
from controller.metrics import phases
from controller.requests import Call
from db import repositories as repo
from db.enums import OperationKind, OperationState, VmState
from db.models import Operation, Vm, utcnow
from virtplane_common.errors import NotFound

Kind = OperationKind

CANCELLED = "CANCELLED"
RESTARTED = "the controller restarted before the host accepted the request"


class OperationNotFound(NotFound):
    def __init__(self, op_id: str) -> None:
        super().__init__("operation", op_id)


def begin(
    session: Session,
    kind: OperationKind,
    vm: Vm,
    call: Call,
    *,
    host_id: str | None = None,
    scheduled: bool = False,
) -> Operation:
    """A new RUNNING operation on vm, in the caller's transaction."""
    now = utcnow()
    op = Operation(
        id=str(uuid.uuid4()),
        kind=kind,
        state=OperationState.RUNNING,
        vm_id=vm.id,
        host_id=host_id,
        request_id=call.request_id or None,
        error_code="",
        error_message="",
        created_at=now,
        scheduled_at=now if scheduled else None,
    )
    session.add(op)
    if scheduled:
        phases.note(session, kind, "scheduled", now, now)
    audit.mutation(
        session, call, f"{kind.value} operation {op.id}", vm_id=vm.id, operation_id=op.id
    )
    return op


def queue(op: Operation, queued: Queued) -> None:
    """op waits its turn (controller.lifecycle.migration_queue): nothing is
    booked for it, and a controller restart keeps it waiting."""
    op.waiting = True
    op.host_id = None
    op.scheduled_at = None
    op.message = queued.message
    op.destination_ref = queued.destination_ref
    op.cause = queued.cause
    op.migration_policy = queued.convergence.to_json()


def _finish(session: Session, op: Operation, state: OperationState, code: str, why: str) -> None:
    op.state = state
    op.waiting = False
    op.done_at = utcnow()
    op.error_code = code
    op.error_message = why
    outcome = state.value if not why else f"{state.value}: {why}"
    audit.record(
        session,
        audit.OPERATION,
        f"{op.kind.value} {outcome}",
        vm_id=op.vm_id,
        host_id=op.host_id,
        operation_id=op.id,
    )


def _settle(session: Session, op: Operation, vm: Vm) -> None:
    """Ends op when vm's state decides it; records the boot phases."""
    verb = BY_KIND[op.kind]
    if verb.moves:
        _settle_move(session, op, vm)
        return
    now = utcnow()
    if op.kind is Kind.START_VM and vm.host_id is not None and op.state is OperationState.RUNNING:
        op.host_id = vm.host_id  # a retry may have moved the start to another host
    if verb.boots:
        if vm.state is VmState.POWERING_UP and op.powering_up_at is None:
            op.powering_up_at = now
            phases.note(session, op.kind, "powering_up", op.created_at, now)
        if vm.state is VmState.UP and op.up_at is None:
            op.up_at = now
            phases.note(session, op.kind, "up", op.created_at, now)
    if op.state is not OperationState.RUNNING or op.accepted_at is None:
        return
    if verb.instant or vm.state in verb.succeeds_in:
        _finish(session, op, OperationState.SUCCEEDED, "", "")
    elif vm.state in verb.fails_in:
        detail = f" ({vm.exit_reason.value})" if vm.state is VmState.DOWN else ""
        why = f"the VM went {vm.state.value}{detail}"
        if vm.status_message:
            why += f": {vm.status_message}"
        _finish(session, op, OperationState.FAILED, "ABORTED", why)


def _settle_move(session: Session, op: Operation, vm: Vm) -> None:
    """A migration: ends when the VM runs on the destination (op.host_id),
    or anywhere but MIGRATING_FROM elsewhere (it failed, was cancelled, or
    the VM went DOWN)."""
    landed = vm.host_id is not None and vm.host_id == op.host_id
    if landed and vm.state is VmState.UP and op.up_at is None:
        op.up_at = utcnow()
        phases.note(session, op.kind, "up", op.created_at, op.up_at)
    if op.state is not OperationState.RUNNING or op.accepted_at is None:
        return
    if landed and vm.state in BY_KIND[op.kind].succeeds_in:
        _finish(session, op, OperationState.SUCCEEDED, "", "")
    elif not landed and vm.state is not VmState.MIGRATING_FROM:
        if op.error_code:  # cancelled (mark_cancelled): that is why
            _finish(session, op, OperationState.FAILED, op.error_code, op.error_message)
            return
        why = f"the migration did not complete; the VM is {vm.state.value} on its host"
        if vm.status_message:
            why += f": {vm.status_message}"
        _finish(session, op, OperationState.FAILED, "ABORTED", why)


def mark_cancelled(session: Session, op_id: str, why: str, code: str = CANCELLED) -> None:
    """A running migration is being cancelled: however it ends on its source,
    it ends FAILED (code) with why. unmark_cancelled() takes it back."""
    op = session.get(Operation, op_id)
    if op is not None and op.state is OperationState.RUNNING:
        op.error_code, op.error_message = code, why


def unmark_cancelled(session: Session, op_id: str) -> None:
    op = session.get(Operation, op_id)
    if op is not None and op.state is OperationState.RUNNING:
        op.error_code, op.error_message = "", ""


def lock_vm(session: Session, vm: Vm) -> None:
    """Reloads vm and locks its row until the transaction ends; a unit of
    work that records accepted() calls it before changing the VM.

    On PostgreSQL this, with progress() locking the operations it reads,
    keeps a host's event that moves the VM (in the monitor's transaction)
    from slipping past the verb's accepted(): whichever comes second sees
    what the first committed, or they deadlock and one runs again.

    A unit of work that reads the VM to change it first can lock it as it
    reads it instead: controller.vm_store.VmStore.update(lock=True)."""
    session.refresh(vm, with_for_update=True)


def accepted(session: Session, op_id: str, dispatched_at: dt.datetime, vm: Vm | None) -> None:
    """The host accepted the operation's request (sent at dispatched_at);
    call lock_vm(vm) first (or read it locked)."""
    op = session.get(Operation, op_id)
    if op is None or op.state is not OperationState.RUNNING:
        return
    op.dispatched_at = dispatched_at
    op.accepted_at = utcnow()
    phases.note(session, op.kind, "dispatched", op.created_at, dispatched_at)
    phases.note(session, op.kind, "accepted", op.created_at, op.accepted_at)
    if vm is not None:
        if op.host_id is None:
            op.host_id = vm.host_id
        _settle(session, op, vm)


def start_accepted(session: Session, vm: Vm, dispatched_at: dt.datetime) -> Operation | None:
    """A host accepted vm's CreateVm (sent at dispatched_at): the VM's
    START_VM operation that waited for it, if any, moves on; returns it.
    Call lock_vm(vm) first (or read it locked)."""
    op = session.scalars(
        select(Operation).where(
            Operation.vm_id == vm.id,
            Operation.kind == OperationKind.START_VM,
            Operation.state == OperationState.RUNNING,
            Operation.accepted_at.is_(None),
        )
    ).first()
    if op is not None:
        accepted(session, op.id, dispatched_at, vm)
    return op


def failed(session: Session, op_id: str, code: str, why: str) -> None:
    """The verb failed before the host accepted it (or was cancelled)."""
    op = session.get(Operation, op_id)
    if op is not None and op.state is OperationState.RUNNING:
        _finish(session, op, OperationState.FAILED, code, why)


def progress(session: Session, moved: list[Vm]) -> None:
    """Moves the running operations of the VMs whose state changed."""
    if not moved:
        return
    by_id = {vm.id: vm for vm in moved}
    # Read them afresh (and locked: see lock_vm), but keep what this unit
    # of work changed in them.
    for obj in list(session.identity_map.values()):
        if isinstance(obj, Operation) and obj.vm_id in by_id and not session.is_modified(obj):
            session.expire(obj)
    with session.no_autoflush:
        ops = session.scalars(
            select(Operation)
            .where(Operation.vm_id.in_(list(by_id)), Operation.state == OperationState.RUNNING)
            .with_for_update()
        ).all()
    for op in ops:
        _settle(session, op, by_id[op.vm_id])


def recover(session: Session) -> int:
    """At controller start: fails the operations no host had accepted,
    except the starts the starter sends again (a VM booked on a host,
    WAIT_FOR_LAUNCH with its CreateVm key: Starter.resend_pending() in
    controller.lifecycle.placement);
    the others go on. Returns how many failed."""
    stale = session.scalars(
        select(Operation).where(
            Operation.state == OperationState.RUNNING,
            Operation.accepted_at.is_(None),
            Operation.waiting.is_(False),  # a waiting migration waits on
        )
    ).all()
    for op in stale:
        if op.kind is Kind.START_VM:
            vm = session.get(Vm, op.vm_id)
            if vm is not None and vm.state is VmState.WAIT_FOR_LAUNCH and vm.start_request_id:
                continue
        _finish(session, op, OperationState.FAILED, "ABORTED", RESTARTED)
    return len(stale)


def find(session: Session, op_id: str) -> Operation:
    op = session.get(Operation, op_id)
    if op is None:
        raise OperationNotFound(op_id)
    return op


class VmAndOperation(NamedTuple):
    """What a verb answers: the VM and its operation, each as it is now
    (rows, read in one transaction; the servicer converts them)."""

    vm: Vm
    operation: Operation


def with_vm(session: Session, op_id: str) -> VmAndOperation:
    """The VM of an operation and the operation, each as it is now: what a
    verb answers, also to a repeat of its request."""
    op = find(session, op_id)
    vm = repo.find_vm(session, op.vm_id)
    if vm is None:
        raise VmNotFound(op.vm_id)
    return VmAndOperation(vm, op)
