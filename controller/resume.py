"""StartVm of a VM that still has a place on a host: a SUSPENDED VM is
restored on the host that holds its saved state (it is never scheduled
elsewhere: the file is there), a PAUSED VM is resumed where it runs."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.orm import Session
from virtplane.v1 import host_agent_service_pb2 as agent_pb2

from controller import convert, transitions
from controller.vm_store import set_state
from db import repositories as repo
from db.enums import ExitReason, HostState, VmState
from db.models import Vm
from virtplane_common.errors import FailedPrecondition, ResourceExhausted, VirtplaneError
from virtplane_common.status import status_code

FROM_STATES = frozenset({VmState.SUSPENDED, VmState.PAUSED})


class NoRoomToRestore(ResourceExhausted):
    def __init__(self, vm: str, host: str, free: int, needs: int) -> None:
        super().__init__(
            f"cannot restore VM {vm!r} on host {host!r}, which holds its saved state:"
            f" {free} MiB free, it needs {needs} MiB"
        )


@dataclass(frozen=True)
class Target:
    """Where StartVm sends the VM, and how."""

    host_id: str
    host_name: str
    address: str
    config: agent_pb2.VmConfig
    # ResumeVm instead of CreateVm (a PAUSED VM).
    resume: bool = False


def begin(session: Session, vm: Vm) -> Target:
    """In the StartVm transaction: where a SUSPENDED or PAUSED VM starts.
    The host's row is locked, as a placement locks it, so that the host
    cannot go to maintenance under the restore."""
    host = repo.lock_host(session, vm.host_id) if vm.host_id else None
    if host is None:
        raise FailedPrecondition(
            f"cannot start VM {vm.name!r}: it is {vm.state.value} but its host is not known"
        )
    if host.state is not HostState.UP:
        what = "holds its saved state" if vm.state is VmState.SUSPENDED else "runs it"
        raise FailedPrecondition(
            f"cannot start VM {vm.name!r}: host {host.name!r}, which {what}, is"
            f" {host.state.value}; it must be UP"
        )
    if vm.state is VmState.PAUSED:
        return Target(host.id, host.name, host.address, convert.vm_config(vm), resume=True)
    total, (used, _cpus, _vms) = (
        host.memory_total_mib,
        repo.host_usage(session).get(host.id, (0, 0, 0)),
    )
    if total and total - used < vm.memory_mib:
        raise NoRoomToRestore(vm.name, host.name, total - used, vm.memory_mib)
    set_state(vm, VmState.RESTORING_STATE, exit_reason=ExitReason.NONE, message="")
    # hostd restores with the configuration saved beside the state; only
    # the VM's id is read from this one.
    return Target(host.id, host.name, host.address, convert.vm_config(vm))


def record(vm: Vm, target: Target, answer: agent_pb2.HostVm) -> bool:
    """Applies the host's answer to ResumeVm."""
    return transitions.apply_host_vm(vm, target.host_id, answer)


def undo(vm: Vm, target: Target, why: str) -> bool:
    """The host refused the restore: the VM is SUSPENDED again."""
    if vm.state is VmState.RESTORING_STATE and not target.resume:
        set_state(vm, VmState.SUSPENDED, message=f"restore failed: {why}")
        return True
    return False


def status_name(exc: VirtplaneError) -> str:
    """The gRPC status code name of exc, as an operation's error records it."""
    return status_code(exc).name
