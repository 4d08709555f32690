"""The audit log (table events): every mutation asked through the API and
every state change of a VM or host, with the request that caused it.

State changes are caught where they are written, whoever writes them (a
verb, the monitor, a host verb): before_flush() looks at the VMs and hosts
whose state changed in the flush and logs each change. The services log
the mutations themselves (mutation()).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import inspect, select
from sqlalchemy.orm import Session
from virtplane.v1 import operation_service_pb2 as op_api

from controller import convert
from controller.requests import Call
from db import repositories as repo
from db.enums import ExitReason, VmState
from db.models import Event, Host, Vm, utcnow

VM_CREATED = "VM_CREATED"
VM_DELETED = repo.VM_DELETED
VM_STATE = "VM_STATE"
HOST_ADDED = "HOST_ADDED"
HOST_REMOVED = "HOST_REMOVED"
HOST_STATE = "HOST_STATE"
REQUEST = "REQUEST"
OPERATION = "OPERATION"

MAX_PAGE = 1000


def record(
    session: Session,
    kind: str,
    message: str,
    *,
    vm_id: str | None = None,
    host_id: str | None = None,
    operation_id: str | None = None,
    revision: int | None = None,
) -> None:
    session.add(
        Event(
            time=utcnow(),
            kind=kind,
            vm_id=vm_id,
            host_id=host_id,
            operation_id=operation_id,
            request_id=session.info.get("request_id"),
            message=message,
            revision=revision,
        )
    )


def mutation(
    session: Session,
    call: Call,
    message: str = "",
    *,
    vm_id: str | None = None,
    host_id: str | None = None,
    operation_id: str | None = None,
) -> None:
    """Logs a mutation the API carried out."""
    text = f"{call.method}: {message}" if message else call.method
    record(session, REQUEST, text, vm_id=vm_id, host_id=host_id, operation_id=operation_id)


def vm_deleted(session: Session, vm: Vm, revision: int) -> None:
    record(session, VM_DELETED, f"VM {vm.name!r} deleted", vm_id=vm.id, revision=revision)


def _change(obj: Any, attr: str) -> tuple[Any, Any] | None:
    """(before, after) of an attribute changed since the last flush."""
    history = inspect(obj).attrs[attr].history
    if not history.added:
        return None
    before = history.deleted[0] if history.deleted else None
    after = history.added[0]
    return None if before == after else (before, after)


def _vm_state(session: Session, vm: Vm, before: VmState | None, after: VmState) -> None:
    why = vm.status_message
    if after is VmState.DOWN and vm.exit_reason is not ExitReason.NONE:
        why = f"{vm.exit_reason.value}: {why}" if why else vm.exit_reason.value
    host = _change(vm, "host_id")  # a VM going DOWN leaves its host: name that one
    record(
        session,
        VM_STATE,
        f"{before.value if before else '?'} → {after.value}" + (f" ({why})" if why else ""),
        vm_id=vm.id,
        host_id=vm.host_id or (host[0] if host else None),
    )


def before_flush(session: Session) -> list[Vm]:
    """Logs the VMs and hosts created, removed or moved to another state in
    this flush; returns the VMs whose state changed."""
    moved: list[Vm] = []
    for obj in list(session.new):
        if isinstance(obj, Vm):
            record(session, VM_CREATED, f"VM {obj.name!r} created", vm_id=obj.id)
        elif isinstance(obj, Host):
            record(session, HOST_ADDED, f"host {obj.name!r} added", host_id=obj.id)
    for obj in list(session.dirty):
        if isinstance(obj, Vm):
            change = _change(obj, "state")
            if change is not None:
                moved.append(obj)
                _vm_state(session, obj, *change)
        elif isinstance(obj, Host):
            change = _change(obj, "state")
            if change is not None:
                before, after = change
                why = f" ({obj.state_message})" if obj.state_message else ""
                record(
                    session,
                    HOST_STATE,
                    f"{before.value if before else '?'} → {after.value}{why}",
                    host_id=obj.id,
                )
    for obj in list(session.deleted):
        if isinstance(obj, Host):
            record(session, HOST_REMOVED, f"host {obj.name!r} removed", host_id=obj.id)
    return moved


def list_events(session: Session, request: op_api.ListEventsRequest) -> list[op_api.Event]:
    """A page of the log, oldest first, after request.after_id."""
    size = min(request.page_size or 100, MAX_PAGE)
    query = select(Event).where(Event.id > request.after_id).order_by(Event.id).limit(size)
    if request.vm_id:
        query = query.where(Event.vm_id == request.vm_id)
    if request.host_id:
        query = query.where(Event.host_id == request.host_id)
    return [
        op_api.Event(
            id=e.id,
            time=convert.timestamp(e.time),
            kind=e.kind,
            vm_id=e.vm_id or "",
            host_id=e.host_id or "",
            operation_id=e.operation_id or "",
            request_id=e.request_id or "",
            message=e.message,
        )
        for e in session.scalars(query)
    ]
