"""The audit log (table events): every mutation asked through the API and
every state change of a VM or host, with the request that caused it.

Each is logged by name where it is written: the services log the
mutations (mutation()); the VM store logs the VMs a unit of work created or
moved (vm_changes(), from VmStore.stamp); a host's state is logged where it
is set (controller.host_state). A record carries the request id of the API
call that caused it, when it has one.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session
from virtplane.v1 import operation_service_pb2 as op_api

from controller.requests import Call
from db import repositories as repo
from db.enums import ExitReason, HostState, VmState
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
    request_id: str = "",
    principal: str = "",
) -> None:
    session.add(
        Event(
            time=utcnow(),
            kind=kind,
            vm_id=vm_id,
            host_id=host_id,
            operation_id=operation_id,
            request_id=request_id or None,
            principal=principal or None,
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
    """Logs a mutation the API carried out, with the principal that asked."""
    text = f"{call.method}: {message}" if message else call.method
    record(
        session,
        REQUEST,
        text,
        vm_id=vm_id,
        host_id=host_id,
        operation_id=operation_id,
        request_id=call.request_id,
        principal=call.principal,
    )


def vm_deleted(session: Session, vm: Vm, revision: int, request_id: str = "") -> None:
    record(
        session,
        VM_DELETED,
        f"VM {vm.name!r} deleted",
        vm_id=vm.id,
        revision=revision,
        request_id=request_id,
    )


@dataclass(frozen=True)
class Seen:
    """A VM's state and host as a unit of work found it."""

    state: VmState
    host_id: str | None


def seen(vms: Iterable[Vm]) -> dict[str, Seen]:
    """What vms are now, for vm_changes() to compare with later."""
    return {vm.id: Seen(vm.state, vm.host_id) for vm in vms}


def _vm_state(session: Session, vm: Vm, before: Seen, request_id: str) -> None:
    why = vm.status_message
    if vm.state is VmState.DOWN and vm.exit_reason is not ExitReason.NONE:
        why = f"{vm.exit_reason.value}: {why}" if why else vm.exit_reason.value
    record(
        session,
        VM_STATE,
        f"{before.state.value} → {vm.state.value}" + (f" ({why})" if why else ""),
        vm_id=vm.id,
        # A VM going DOWN leaves its host: name that one.
        host_id=vm.host_id or before.host_id,
        request_id=request_id,
    )


def vm_changes(
    session: Session, vms: Iterable[Vm], found: Mapping[str, Seen], request_id: str = ""
) -> list[Vm]:
    """Logs each of vms that the unit of work created (not in found) or
    moved to another state than found; returns the VMs it moved."""
    moved: list[Vm] = []
    for vm in vms:
        before = found.get(vm.id)
        if before is None:
            record(
                session, VM_CREATED, f"VM {vm.name!r} created", vm_id=vm.id, request_id=request_id
            )
        elif before.state is not vm.state:
            moved.append(vm)
            _vm_state(session, vm, before, request_id)
    return moved


def host_added(session: Session, host: Host, request_id: str = "") -> None:
    record(session, HOST_ADDED, f"host {host.name!r} added", host_id=host.id, request_id=request_id)


def host_removed(session: Session, host: Host, request_id: str = "") -> None:
    record(
        session, HOST_REMOVED, f"host {host.name!r} removed", host_id=host.id, request_id=request_id
    )


def host_state(session: Session, host: Host, before: HostState, request_id: str = "") -> None:
    why = f" ({host.state_message})" if host.state_message else ""
    record(
        session,
        HOST_STATE,
        f"{before.value} → {host.state.value}{why}",
        host_id=host.id,
        request_id=request_id,
    )


def list_events(session: Session, request: op_api.ListEventsRequest) -> list[Event]:
    """A page of the log, oldest first, after request.after_id."""
    size = min(request.page_size or 100, MAX_PAGE)
    query = select(Event).where(Event.id > request.after_id).order_by(Event.id).limit(size)
    if request.vm_id:
        query = query.where(Event.vm_id == request.vm_id)
    if request.host_id:
        query = query.where(Event.host_id == request.host_id)
    return list(session.scalars(query))
