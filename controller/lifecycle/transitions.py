"""How what a host reports moves a VM's state. Pure functions over the row;
the caller persists and publishes."""

from __future__ import annotations

from virtplane.v1 import host_agent_service_pb2 as agent_pb2

from controller.lifecycle.states import ON_HOST, set_state
from db.enums import ExitReason, VmState
from db.models import Vm

HostVm = agent_pb2.HostVm

_EXIT_REASONS = {
    HostVm.EXIT_REASON_DESTROYED: ExitReason.USER_STOP,
    HostVm.EXIT_REASON_SHUTDOWN: ExitReason.GUEST_SHUTDOWN,
    HostVm.EXIT_REASON_CRASHED: ExitReason.CRASHED,
    HostVm.EXIT_REASON_START_FAILED: ExitReason.START_FAILED,
    HostVm.EXIT_REASON_MIGRATED: ExitReason.MIGRATED,
    HostVm.EXIT_REASON_SAVED: ExitReason.SAVED_TO_FILE,
}

# hostd's states that the VM takes as they are. SUSPENDED is not ON_HOST
# (states.py says why).
_AS_REPORTED = {
    HostVm.STATE_REBOOT_IN_PROGRESS: VmState.REBOOT_IN_PROGRESS,
    HostVm.STATE_SAVING_STATE: VmState.SAVING_STATE,
    HostVm.STATE_RESTORING_STATE: VmState.RESTORING_STATE,
    HostVm.STATE_SUSPENDED: VmState.SUSPENDED,
    HostVm.STATE_MIGRATING_FROM: VmState.MIGRATING_FROM,
}
_LANDED = frozenset({HostVm.STATE_RUNNING, HostVm.STATE_PAUSED})


def _running_state(vm: Vm) -> VmState:
    # UP once the guest agent has reported since this start.
    if vm.state in (VmState.UP, VmState.POWERING_DOWN):
        return vm.state
    if vm.state in (VmState.PAUSED, VmState.UNKNOWN) and vm.guest_facts:
        return VmState.UP
    return VmState.POWERING_UP


def apply_host_vm(vm: Vm, host_id: str, report: agent_pb2.HostVm) -> bool:
    """Applies a VM state reported by host_id; returns whether vm changed.

    A report from a host the VM is not placed on is stale and ignored,
    except the destination's of a VM migrating away from its host: once the
    VM runs there, it is placed there.
    """
    before = (vm.state, vm.host_id, vm.exit_reason, vm.status_message)
    state = report.state
    if vm.host_id != host_id:
        if vm.state is VmState.MIGRATING_FROM and state in _LANDED:
            vm.host_id = host_id
            landed = VmState.PAUSED if state == HostVm.STATE_PAUSED else VmState.UP
            set_state(vm, landed, message="")
            return True
        return False
    if vm.state not in ON_HOST:
        return False
    if state == HostVm.STATE_DOWN and report.exit_reason == HostVm.EXIT_REASON_MIGRATED:
        # It left for another host, whose report places it there; until
        # then it is neither here nor DOWN.
        set_state(
            vm, VmState.MIGRATING_FROM, message="migrated off its host; awaiting the destination"
        )
        return before != (vm.state, vm.host_id, vm.exit_reason, vm.status_message)
    if state == HostVm.STATE_RUNNING and vm.state is VmState.MIGRATING_FROM:
        # Its migration failed or was cancelled: it runs on here; the
        # host's message says why.
        set_state(vm, VmState.UP, message=report.message)
    elif state == HostVm.STATE_RUNNING:
        set_state(vm, _running_state(vm))
    elif state == HostVm.STATE_PAUSED:
        set_state(vm, VmState.PAUSED)
    elif state == HostVm.STATE_POWERING_DOWN:
        set_state(vm, VmState.POWERING_DOWN)
    elif state == HostVm.STATE_DOWN:
        reason = _EXIT_REASONS.get(report.exit_reason, ExitReason.LOST)
        message = report.message
        if reason is ExitReason.USER_STOP and vm.state is not VmState.POWERING_DOWN:
            message = message or "the domain was destroyed on its host"
        set_state(vm, VmState.DOWN, exit_reason=reason, message=message)
    elif state in _AS_REPORTED:
        set_state(vm, _AS_REPORTED[state])
    elif state == HostVm.STATE_WAIT_FOR_LAUNCH and vm.state is VmState.UNKNOWN:
        set_state(vm, VmState.WAIT_FOR_LAUNCH)
    return before != (vm.state, vm.host_id, vm.exit_reason, vm.status_message)


def apply_guest_report(vm: Vm, host_id: str) -> bool:
    """A guest report arrived for vm from host_id: it is UP. Returns whether
    the state changed (the facts are stored by the caller)."""
    if vm.host_id != host_id:
        return False
    if vm.state in (VmState.POWERING_UP, VmState.WAIT_FOR_LAUNCH):
        set_state(vm, VmState.UP)
        return True
    return False


SOURCE_LOST = "its host cannot be reached; the destination's report will tell where it runs"


def host_lost(vm: Vm) -> bool:
    """The VM's host cannot be reached: the VM's state is UNKNOWN, never DOWN.
    A VM migrating away stays MIGRATING_FROM: the transfer may land, and
    then the destination's report places it there (apply_host_vm), which an
    UNKNOWN VM's would not; if it does not land, the source's report when it
    is back (or fencing) says where it is."""
    if vm.state is VmState.MIGRATING_FROM:
        if vm.status_message == SOURCE_LOST:
            return False
        set_state(vm, VmState.MIGRATING_FROM, message=SOURCE_LOST)
        return True
    if vm.state in ON_HOST and vm.state is not VmState.UNKNOWN:
        set_state(vm, VmState.UNKNOWN, message="its host cannot be reached")
        return True
    return False


def missing_on_host(vm: Vm) -> bool:
    """The host no longer has the VM, and no event said why. A VM migrating
    away waits for its destination's report instead."""
    if vm.state in ON_HOST and vm.state not in (VmState.WAIT_FOR_LAUNCH, VmState.MIGRATING_FROM):
        set_state(
            vm,
            VmState.DOWN,
            exit_reason=ExitReason.LOST,
            message="the host no longer runs the VM",
        )
        return True
    return False
