"""The VM state sets the controller's rules speak of, each defined once, and
set_state(), the one place a VM's state is written."""

from __future__ import annotations

from db.enums import ACTIVE_VM_STATES, PENDING_VM_STATES, ExitReason, VmState
from db.models import Vm, utcnow

__all__ = ["ACTIVE_VM_STATES", "PENDING_VM_STATES"]

S = VmState

# UP, or on its way there.
RUNNING = frozenset({S.UP, S.POWERING_UP})
# The VM's domain runs on its host: its guest channel is open.
AGENT_REACHABLE = RUNNING | {S.PAUSED, S.POWERING_DOWN, S.NOT_RESPONDING}
# The VM is believed to run on its host. SUSPENDED (hibernated to a file on
# the host, no domain) is not: nothing runs there to lose.
ON_HOST = frozenset(
    {
        S.WAIT_FOR_LAUNCH,
        S.POWERING_UP,
        S.UP,
        S.PAUSED,
        S.POWERING_DOWN,
        S.REBOOT_IN_PROGRESS,
        S.SAVING_STATE,
        S.RESTORING_STATE,
        S.NOT_RESPONDING,
        S.UNKNOWN,
        S.MIGRATING_FROM,
    }
)
# StartVm finds these on their own host: SUSPENDED is restored there,
# PAUSED resumed there.
ON_OWN_HOST = frozenset({S.SUSPENDED, S.PAUSED})

# Exits after which a highly available VM is restarted: it crashed, vanished
# from its host, or its host was confirmed down. Not a stop through the API,
# nor a power-off from inside the guest (as oVirt does).
HA_EXIT_REASONS = frozenset({ExitReason.CRASHED, ExitReason.LOST, ExitReason.HOST_FENCED})
# Exits that cancel any automatic restart: the user or the guest wanted it.
WANTED_EXIT_REASONS = frozenset({ExitReason.USER_STOP, ExitReason.GUEST_SHUTDOWN})


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
        elif vm.exit_reason in WANTED_EXIT_REASONS:
            vm.ha_restart_at = None
            vm.ha_restart_count = 0
    elif state is VmState.UP:
        vm.ha_restart_at = None
        vm.ha_restart_count = 0
