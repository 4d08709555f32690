"""The VM verbs as one table: for each, the states it is allowed in (and how
an error says so), its operation's kind, the states that end the operation,
and the exit reason it leaves. The controller's counterpart of
hostd/state_machine.py; controller.lifecycle.runner carries every verb out
by this table, controller.operations ends operations by it.

A verb's operation ends, once the host has accepted the request::

    start      SUCCEEDED when the VM is UP, or PAUSED (started paused, or
               paused before it came up); FAILED when it goes DOWN or is
               hibernated first
    reboot     SUCCEEDED when the VM is UP again; FAILED as a start
    stop,
    shutdown   SUCCEEDED when the VM is DOWN
    hibernate  SUCCEEDED when the VM is SUSPENDED; FAILED when it runs
               again (the save failed) or goes DOWN
    reset, pause,
    resume     SUCCEEDED when the host accepts the verb
    migrate    SUCCEEDED when the VM is UP (or PAUSED) on the destination;
               FAILED when it is anything but MIGRATING_FROM on its source
               (the migration failed or was cancelled)

"resume" un-pauses a PAUSED VM. Restoring a SUSPENDED one is part of start
(controller.lifecycle.restore).
"""

from __future__ import annotations

from dataclasses import dataclass

from controller.lifecycle.states import ON_OWN_HOST, RUNNING
from db.enums import ExitReason, OperationKind, VmState

S = VmState
_NONE: frozenset[VmState] = frozenset()


@dataclass(frozen=True)
class Verb:
    """One verb's rules."""

    # As an error message says it: "cannot shut down VM 'v'".
    name: str
    # The states it is allowed in, and how an error message says so.
    allowed: frozenset[VmState]
    wording: str
    kind: OperationKind
    # The VM must be placed on a known host (the verb calls that host).
    needs_host: bool = True
    # The states that end its operation, once the host accepted it.
    succeeds_in: frozenset[VmState] = _NONE
    fails_in: frozenset[VmState] = _NONE
    # Done as soon as the host accepts it.
    instant: bool = False
    # The VM boots: the operation records its POWERING_UP and UP phases.
    boots: bool = False
    # The exit reason a VM brought DOWN by the verb gets. Neither USER_STOP
    # nor GUEST_SHUTDOWN is among states.HA_EXIT_REASONS: a VM stopped by a
    # verb is not restarted.
    exit_reason: ExitReason = ExitReason.NONE
    # The VM moves to the operation's host (a migration): the operation
    # succeeds when the VM is in succeeds_in there, and fails when it is
    # anything but MIGRATING_FROM elsewhere.
    moves: bool = False


START = Verb(
    "start",
    frozenset({S.DOWN}) | ON_OWN_HOST,
    "DOWN",
    OperationKind.START_VM,
    needs_host=False,
    succeeds_in=frozenset({S.UP, S.PAUSED}),
    fails_in=frozenset({S.DOWN, S.SUSPENDED}),
    boots=True,
)
STOP = Verb(
    "stop",
    RUNNING
    | {
        S.WAIT_FOR_LAUNCH,
        S.PAUSED,
        S.POWERING_DOWN,
        S.REBOOT_IN_PROGRESS,
        S.NOT_RESPONDING,
        S.SUSPENDED,  # its saved state is deleted
    },
    "running on a host",
    OperationKind.STOP_VM,
    succeeds_in=frozenset({S.DOWN}),
    exit_reason=ExitReason.USER_STOP,
)
SHUTDOWN = Verb(
    "shut down",
    RUNNING | {S.PAUSED, S.POWERING_DOWN, S.REBOOT_IN_PROGRESS},
    "running, paused or rebooting",
    OperationKind.SHUTDOWN_VM,
    succeeds_in=frozenset({S.DOWN}),
    exit_reason=ExitReason.GUEST_SHUTDOWN,
)
# A reboot fails as a start does.
REBOOT = Verb("reboot", RUNNING, "UP or POWERING_UP", OperationKind.REBOOT_VM, boots=True,
              succeeds_in=frozenset({S.UP}), fails_in=START.fails_in)  # fmt: skip
RESET = Verb(
    "reset",
    RUNNING | {S.PAUSED, S.REBOOT_IN_PROGRESS},
    "running or paused",
    OperationKind.RESET_VM,
    instant=True,
)
PAUSE = Verb("pause", RUNNING, "UP or POWERING_UP", OperationKind.PAUSE_VM, instant=True)
RESUME = Verb("resume", frozenset({S.PAUSED}), "PAUSED", OperationKind.RESUME_VM, instant=True)
HIBERNATE = Verb(
    "hibernate",
    RUNNING | {S.PAUSED},
    "running or paused",
    OperationKind.HIBERNATE_VM,
    succeeds_in=frozenset({S.SUSPENDED}),
    fails_in=frozenset({S.DOWN, S.POWERING_UP, S.UP}),
)

MIGRATE = Verb(
    "migrate",
    frozenset({S.UP}),
    "UP",
    OperationKind.MIGRATE_VM,
    succeeds_in=frozenset({S.UP, S.PAUSED}),
    moves=True,
)

VERBS = (START, STOP, SHUTDOWN, REBOOT, RESET, PAUSE, RESUME, HIBERNATE, MIGRATE)
BY_KIND = {verb.kind: verb for verb in VERBS}
