"""StartVm of a VM that still has a place on a host: a SUSPENDED VM is
restored on the host that holds its saved state (it is never scheduled
elsewhere: the file is there); a PAUSED VM is resumed where it runs."""

from __future__ import annotations

from sqlalchemy.orm import Session

from controller import convert
from controller.lifecycle.states import set_state
from controller.lifecycle.target import HostTarget
from db import repositories as repo
from db.enums import ExitReason, HostState, VmState
from db.models import Vm
from virtplane_common.errors import FailedPrecondition, ResourceExhausted


class NoRoomToRestore(ResourceExhausted):
    def __init__(self, vm: str, host: str, free: int, needs: int) -> None:
        super().__init__(
            f"cannot restore VM {vm!r} on host {host!r}, which holds its saved state:"
            f" {free} MiB free, it needs {needs} MiB"
        )


def begin(session: Session, vm: Vm) -> HostTarget:
    """In the StartVm transaction: where a SUSPENDED or PAUSED VM starts. A
    PAUSED VM's target has no config (the host resumes it); a SUSPENDED VM's
    has the config its host restores it with, and the VM is RESTORING_STATE.
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
        return HostTarget.of(vm, host)
    total, (used, _cpus, _vms) = (
        host.memory_total_mib,
        repo.host_usage(session).get(host.id, (0, 0, 0)),
    )
    if total and total - used < vm.memory_mib:
        raise NoRoomToRestore(vm.name, host.name, total - used, vm.memory_mib)
    set_state(vm, VmState.RESTORING_STATE, exit_reason=ExitReason.NONE, message="")
    # hostd restores with the configuration saved beside the state; only
    # the VM's id is read from this one.
    return HostTarget.of(vm, host, config=convert.vm_config(vm))


def undo(vm: Vm, target: HostTarget, why: str) -> bool:
    """The host refused the restore: the VM is SUSPENDED again."""
    if vm.state is VmState.RESTORING_STATE and target.config is not None:
        set_state(vm, VmState.SUSPENDED, message=f"restore failed: {why}")
        return True
    return False
