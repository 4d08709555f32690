"""Operations: a long-running verb on a VM, its phases and its end.

A verb begins its operation in the transaction that takes the VM's request
(begin()); the verb records when it dispatched the request and when the
host accepted it (accepted()). From then on the VM's state decides: every
flush that moves a VM (whoever moves it: the verb, the host monitor, a host
verb) also moves the VM's running operations (progress(), installed as a
before_flush hook by install()). So the monitor completes the phases as
the host's events come in, without knowing about operations.

What ends an operation, by kind::

    START_VM      SUCCEEDED when the VM is UP, or PAUSED (started paused, or
                  paused before it came up); FAILED when it goes DOWN or is
                  hibernated first
    REBOOT_VM     SUCCEEDED when the VM is UP again; FAILED as a start
    STOP_VM,
    SHUTDOWN_VM   SUCCEEDED when the VM is DOWN
    HIBERNATE_VM  SUCCEEDED when the VM is SUSPENDED; FAILED when it runs
                  again (the save failed) or goes DOWN
    RESET_VM, PAUSE_VM,
    RESUME_VM     SUCCEEDED when the host accepts the verb

Success and failure count only once the host has accepted the request;
before that, the verb itself ends the operation when the host refuses.

After a controller restart (recover()): an operation the host had accepted
resumes — it ends as above, as the monitor learns the VM's state from the
host; so does a start booked on a host, which the starter sends again with
the same key; any other the host had not accepted yet ends FAILED ("the
controller restarted before the host accepted the request"), as nobody will
send it.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import datetime as dt
import json
import time
import uuid
from typing import Any

from sqlalchemy import and_, event, or_, select
from sqlalchemy.orm import Session
from virtplane.v1 import operation_pb2, vm_pb2
from virtplane.v1 import operation_service_pb2 as op_api

from controller import audit, convert
from controller.errors import VmNotFound
from controller.requests import Call
from controller.watch import Subscription, TooSlow, WatchHub
from db import repositories as repo
from db.enums import OperationKind, OperationState, VmState
from db.models import Operation, Vm, utcnow
from db.session import Database
from virtplane_common.errors import InvalidArgument, NotFound

Kind = OperationKind
_SUCCESS: dict[OperationKind, frozenset[VmState]] = {
    Kind.START_VM: frozenset({VmState.UP, VmState.PAUSED}),
    Kind.REBOOT_VM: frozenset({VmState.UP}),
    Kind.STOP_VM: frozenset({VmState.DOWN}),
    Kind.SHUTDOWN_VM: frozenset({VmState.DOWN}),
    Kind.HIBERNATE_VM: frozenset({VmState.SUSPENDED}),
}
_FAILURE: dict[OperationKind, frozenset[VmState]] = {
    Kind.START_VM: frozenset({VmState.DOWN, VmState.SUSPENDED}),
    Kind.REBOOT_VM: frozenset({VmState.DOWN, VmState.SUSPENDED}),
    Kind.HIBERNATE_VM: frozenset({VmState.DOWN, VmState.POWERING_UP, VmState.UP}),
}
# Kinds done as soon as the host accepts the verb.
_INSTANT = frozenset({Kind.RESET_VM, Kind.PAUSE_VM, Kind.RESUME_VM})
# Kinds whose VM boots: their POWERING_UP and UP phases are recorded.
_BOOTING = frozenset({Kind.START_VM, Kind.REBOOT_VM})

RESTARTED = "the controller restarted before the host accepted the request"
DEFAULT_WAIT = 60
MAX_WAIT = 600
MAX_PAGE = 1000
_POLL = 1.0  # seconds between reads of an operation waited for


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
    audit.mutation(
        session, call, f"{kind.value} operation {op.id}", vm_id=vm.id, operation_id=op.id
    )
    return op


def _finish(session: Session, op: Operation, state: OperationState, code: str, why: str) -> None:
    op.state = state
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
    now = utcnow()
    if op.kind is Kind.START_VM and vm.host_id is not None and op.state is OperationState.RUNNING:
        op.host_id = vm.host_id  # a retry may have moved the start to another host
    if op.kind in _BOOTING:
        if vm.state is VmState.POWERING_UP and op.powering_up_at is None:
            op.powering_up_at = now
        if vm.state is VmState.UP and op.up_at is None:
            op.up_at = now
    if op.state is not OperationState.RUNNING or op.accepted_at is None:
        return
    if op.kind in _INSTANT or vm.state in _SUCCESS.get(op.kind, frozenset()):
        _finish(session, op, OperationState.SUCCEEDED, "", "")
    elif vm.state in _FAILURE.get(op.kind, frozenset()):
        detail = f" ({vm.exit_reason.value})" if vm.state is VmState.DOWN else ""
        why = f"the VM went {vm.state.value}{detail}"
        if vm.status_message:
            why += f": {vm.status_message}"
        _finish(session, op, OperationState.FAILED, "ABORTED", why)


def lock_vm(session: Session, vm: Vm) -> None:
    """Reloads vm and locks its row until the transaction ends; a unit of
    work that records accepted() calls it before changing the VM.

    On PostgreSQL this, with progress() locking the operations it reads,
    keeps a host's event that moves the VM (in the monitor's transaction)
    from slipping past the verb's accepted(): whichever comes second sees
    what the first committed, or they deadlock and one runs again."""
    session.refresh(vm, with_for_update=True)


def accepted(session: Session, op_id: str, dispatched_at: dt.datetime, vm: Vm | None) -> None:
    """The host accepted the operation's request (sent at dispatched_at);
    call lock_vm(vm) first."""
    op = session.get(Operation, op_id)
    if op is None or op.state is not OperationState.RUNNING:
        return
    op.dispatched_at = dispatched_at
    op.accepted_at = utcnow()
    if vm is not None:
        if op.host_id is None:
            op.host_id = vm.host_id
        _settle(session, op, vm)


def start_accepted(session: Session, vm: Vm, dispatched_at: dt.datetime) -> None:
    """A host accepted vm's CreateVm (sent at dispatched_at): the VM's
    START_VM operation that waited for it, if any, moves on. Call
    lock_vm(vm) first."""
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


def failed(session: Session, op_id: str, code: str, why: str) -> None:
    """The verb failed before the host accepted it."""
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


def install(db: Database) -> None:
    """Logs state changes and moves operations in every flush of db's sessions."""

    def hook(session: Session, _context: Any, _instances: Any) -> None:
        progress(session, audit.before_flush(session))

    event.listen(db.sessions, "before_flush", hook)


def recover(session: Session) -> int:
    """At controller start: fails the operations no host had accepted,
    except the starts the starter sends again (a VM booked on a host,
    WAIT_FOR_LAUNCH with its CreateVm key: controller.starter resume());
    the others resume. Returns how many failed."""
    stale = session.scalars(
        select(Operation).where(
            Operation.state == OperationState.RUNNING, Operation.accepted_at.is_(None)
        )
    ).all()
    for op in stale:
        if op.kind is Kind.START_VM:
            vm = session.get(Vm, op.vm_id)
            if vm is not None and vm.state is VmState.WAIT_FOR_LAUNCH and vm.start_request_id:
                continue
        _finish(session, op, OperationState.FAILED, "ABORTED", RESTARTED)
    return len(stale)


def to_proto(op: Operation) -> operation_pb2.Operation:
    error = None
    if op.state is OperationState.FAILED:
        error = operation_pb2.OperationError(code=op.error_code, message=op.error_message)
    return operation_pb2.Operation(
        id=op.id,
        kind=operation_pb2.Operation.Kind.Value(f"KIND_{op.kind.value}"),
        vm_id=op.vm_id,
        host_id=op.host_id or "",
        state=operation_pb2.Operation.State.Value(f"STATE_{op.state.value}"),
        done=op.state is not OperationState.RUNNING,
        error=error,
        request_id=op.request_id or "",
        phases=operation_pb2.OperationPhases(
            create_time=convert.timestamp(op.created_at),
            scheduled_time=convert.timestamp(op.scheduled_at),
            dispatched_time=convert.timestamp(op.dispatched_at),
            accepted_time=convert.timestamp(op.accepted_at),
            powering_up_time=convert.timestamp(op.powering_up_at),
            up_time=convert.timestamp(op.up_at),
            done_time=convert.timestamp(op.done_at),
        ),
    )


def get(session: Session, op_id: str) -> operation_pb2.Operation:
    op = session.get(Operation, op_id)
    if op is None:
        raise OperationNotFound(op_id)
    return to_proto(op)


VmAndOperation = tuple[vm_pb2.Vm, operation_pb2.Operation]


def with_vm(session: Session, op_id: str) -> VmAndOperation:
    """The VM of an operation and the operation, each as it is now: what a
    verb answers, also to a repeat of its request."""
    op = get(session, op_id)
    vm = repo.find_vm(session, op.vm_id)
    if vm is None:
        raise VmNotFound(op.vm_id)
    return convert.vm(vm), op


_STATES = {
    operation_pb2.Operation.STATE_RUNNING: OperationState.RUNNING,
    operation_pb2.Operation.STATE_SUCCEEDED: OperationState.SUCCEEDED,
    operation_pb2.Operation.STATE_FAILED: OperationState.FAILED,
}


def _page_token(filters: dict[str, Any], last: Operation) -> str:
    raw = {"filters": filters, "created": last.created_at.isoformat(), "id": last.id}
    return base64.urlsafe_b64encode(json.dumps(raw, sort_keys=True).encode()).decode()


class OperationService:
    """GetOperation, ListOperations, WaitOperation and the audit log."""

    def __init__(self, db: Database, hub: WatchHub | None = None) -> None:
        self._db = db
        self._hub = hub

    async def get(self, op_id: str) -> operation_pb2.Operation:
        if not op_id:
            raise InvalidArgument("id", "is required")
        return await self._db.run(lambda s: get(s, op_id))

    async def wait(self, op_id: str, timeout_seconds: int) -> operation_pb2.Operation:
        """The operation once done, or as it is when the timeout passes. It
        is read again whenever its VM changes here, and at least every
        second (another controller may end it, or the host's answer alone)."""
        if timeout_seconds > MAX_WAIT:
            raise InvalidArgument("timeout_seconds", f"must be at most {MAX_WAIT}")
        deadline = time.monotonic() + (timeout_seconds or DEFAULT_WAIT)
        sub = self._hub.subscribe() if self._hub is not None else None
        try:
            while True:
                op = await self.get(op_id)
                left = deadline - time.monotonic()
                if op.done or left <= 0:
                    return op
                await self._vm_changed(sub, op.vm_id, min(_POLL, left))
        finally:
            if sub is not None:
                sub.close()

    @staticmethod
    async def _vm_changed(sub: Subscription | None, vm_id: str, seconds: float) -> None:
        """Returns when vm_id changes, or after seconds."""
        if sub is None:
            await asyncio.sleep(seconds)
            return
        with contextlib.suppress(TimeoutError, TooSlow):
            async with asyncio.timeout(seconds):
                while (await sub.next()).vm.id != vm_id:
                    pass

    async def page(
        self, request: op_api.ListOperationsRequest
    ) -> tuple[list[operation_pb2.Operation], str]:
        if request.page_size < 0:
            raise InvalidArgument("page_size", "must not be negative")
        size = min(request.page_size or 100, MAX_PAGE)
        states = []
        for i, value in enumerate(request.states):
            if value not in _STATES:
                raise InvalidArgument(f"states[{i}]", f"is not an operation state: {value}")
            states.append(_STATES[value])
        filters = {"vm": request.vm, "states": sorted(s.value for s in states)}
        after: tuple[dt.datetime, str] | None = None
        if request.page_token:
            try:
                token = json.loads(base64.urlsafe_b64decode(request.page_token.encode()))
                after = (dt.datetime.fromisoformat(token["created"]), str(token["id"]))
                same = token["filters"] == filters
            except (binascii.Error, ValueError, KeyError, TypeError) as exc:
                raise InvalidArgument("page_token", "is not a token ListOperations gave") from exc
            if not same:
                raise InvalidArgument("page_token", "was given for other filters")

        def work(session: Session) -> tuple[list[operation_pb2.Operation], str]:
            query = select(Operation).order_by(Operation.created_at.desc(), Operation.id.desc())
            if request.vm:
                vm = repo.find_vm(session, request.vm)
                if vm is None:
                    raise VmNotFound(request.vm)
                query = query.where(Operation.vm_id == vm.id)
            if states:
                query = query.where(Operation.state.in_(states))
            if after is not None:
                query = query.where(
                    or_(
                        Operation.created_at < after[0],
                        and_(Operation.created_at == after[0], Operation.id < after[1]),
                    )
                )
            rows = session.scalars(query.limit(size + 1)).all()
            page = rows[:size]
            token = _page_token(filters, page[-1]) if len(rows) > size else ""
            return [to_proto(op) for op in page], token

        return await self._db.run(work)

    async def events(self, request: op_api.ListEventsRequest) -> list[op_api.Event]:
        if request.page_size < 0:
            raise InvalidArgument("page_size", "must not be negative")
        return await self._db.run(lambda s: audit.list_events(s, request))
