"""How hypervisor events and verbs move a VM's state: pure rules, no I/O.

Events, by the VM's state (one rule per group of states, in _RULES):

- WAIT_FOR_LAUNCH, RESTORING_STATE: only STARTED/RESUMED apply (RUNNING, or
  PAUSED after STARTED when the start was asked paused). libvirt may send
  them before the start call returns, and sends RESUMED and STARTED together
  at boot. A stop seen then is a late one of an earlier domain with the same
  UUID: a start that fails is reported by the start call itself.
- RUNNING, PAUSED, POWERING_DOWN: the domain's own events. STARTED says the
  domain exists, not that its CPUs run (a paused start sends it too): once
  the VM is past its start it changes nothing, however late it comes. The
  SHUTDOWN QEMU reports when hostd kills it is no POWERING_DOWN. A reset
  (REBOOTED) of a RUNNING guest is a reboot.
- REBOOT_IN_PROGRESS: a reboot never looks like a stop. Each reset extends
  the reboot (one reboot resets several times); shutdown, suspend and resume
  events of the reboot itself change nothing. Only a real stop is DOWN.
- SAVING_STATE: the save job decides; the suspend that starts a save and the
  STOPPED(SAVED) that ends it change nothing. Any other stop is DOWN.
- SUSPENDED: no domain, nothing applies.
- MIGRATING_FROM (the source): the migration job decides. The suspend of
  the switch-over and a resume after a failed one change nothing; the
  STOPPED(MIGRATED) that ends it is DOWN with exit reason MIGRATED, and any
  other stop is DOWN too.
- MIGRATING_TO (the destination): the incoming domain is STARTED paused
  (nothing yet); its RESUMED means it landed: RUNNING. A stop is a failed
  or cancelled migration: DOWN (MIGRATION_FAILED).

A migration on one machine, as libvirt reports it: destination STARTED,
source SUSPENDED, destination RESUMED, source STOPPED (all MIGRATED).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum

from hostd.errors import VmStateConflict
from hostd.hypervisor import DomainState, LifecycleEvent, LifecycleKind, StopReason
from hostd.model import ExitReason, VmState


@dataclass(frozen=True)
class Become:
    """The VM moves to state."""

    state: VmState
    exit_reason: ExitReason = ExitReason.UNSPECIFIED
    message: str = ""


@dataclass(frozen=True)
class ResetSeen:
    """The guest was reset: a reboot begins, or goes on."""


Outcome = Become | ResetSeen | None


@dataclass(frozen=True)
class Context:
    state: VmState
    destroying: bool = False
    start_paused: bool = False


EXITS: dict[StopReason, tuple[ExitReason, str]] = {
    StopReason.SHUTDOWN: (ExitReason.SHUTDOWN, "the guest powered off"),
    StopReason.DESTROYED: (ExitReason.DESTROYED, "destroyed"),
    StopReason.CRASHED: (ExitReason.CRASHED, "the guest crashed"),
    StopReason.MIGRATED: (ExitReason.MIGRATED, "migrated to another host"),
    StopReason.SAVED: (ExitReason.SAVED, "saved to a file"),
    StopReason.FAILED: (ExitReason.CRASHED, "the emulator failed"),
    StopReason.OTHER: (ExitReason.UNSPECIFIED, "the domain stopped"),
}
_STOPS = frozenset({LifecycleKind.STOPPED, LifecycleKind.CRASHED})
OBSERVED: dict[DomainState, VmState] = {
    DomainState.RUNNING: VmState.RUNNING,
    DomainState.OTHER: VmState.RUNNING,
    DomainState.PAUSED: VmState.PAUSED,
    DomainState.SHUTTING_DOWN: VmState.POWERING_DOWN,
}
"""The state a running domain's own state means, when hostd reads it rather than
hears it (recovery adopting a domain, a resync after lost events)."""


def _down(event: LifecycleEvent) -> Become:
    reason, message = EXITS[event.reason or StopReason.OTHER]
    return Become(VmState.DOWN, reason, message)


def _launching(ctx: Context, event: LifecycleEvent) -> Outcome:
    if event.kind is LifecycleKind.STARTED:
        return Become(VmState.PAUSED if ctx.start_paused else VmState.RUNNING)
    if event.kind is LifecycleKind.RESUMED:
        return Become(VmState.RUNNING)
    return None


def _running(ctx: Context, event: LifecycleEvent) -> Outcome:
    kind = event.kind
    if kind is LifecycleKind.RESUMED:
        return Become(VmState.RUNNING)
    if kind is LifecycleKind.SUSPENDED:
        return Become(VmState.PAUSED)
    if kind is LifecycleKind.SHUTDOWN:
        return None if ctx.destroying else Become(VmState.POWERING_DOWN)
    if kind in _STOPS:
        return _down(event)
    if kind is LifecycleKind.REBOOTED and ctx.state == VmState.RUNNING:
        return ResetSeen()
    return None


def _rebooting(ctx: Context, event: LifecycleEvent) -> Outcome:
    if event.kind is LifecycleKind.REBOOTED:
        return ResetSeen()
    if event.kind in _STOPS:
        return _down(event)
    return None


def _saving(ctx: Context, event: LifecycleEvent) -> Outcome:
    if event.kind in _STOPS and event.reason is not StopReason.SAVED:
        return _down(event)
    return None


def _no_domain(ctx: Context, event: LifecycleEvent) -> Outcome:
    return None


def _migrating_out(ctx: Context, event: LifecycleEvent) -> Outcome:
    if event.kind in _STOPS:
        return _down(event)
    return None


def _migrating_in(ctx: Context, event: LifecycleEvent) -> Outcome:
    if event.kind is LifecycleKind.RESUMED:
        return Become(VmState.RUNNING, message="migrated here")
    if event.kind in _STOPS:
        return Become(
            VmState.DOWN, ExitReason.MIGRATION_FAILED, "the incoming migration did not complete"
        )
    return None


_RULES: dict[VmState, Callable[[Context, LifecycleEvent], Outcome]] = {
    VmState.WAIT_FOR_LAUNCH: _launching,
    VmState.RESTORING_STATE: _launching,
    VmState.RUNNING: _running,
    VmState.PAUSED: _running,
    VmState.POWERING_DOWN: _running,
    VmState.REBOOT_IN_PROGRESS: _rebooting,
    VmState.SAVING_STATE: _saving,
    VmState.SUSPENDED: _no_domain,
    VmState.MIGRATING_FROM: _migrating_out,
    VmState.MIGRATING_TO: _migrating_in,
}


def on_event(ctx: Context, event: LifecycleEvent) -> Outcome:
    """What a lifecycle event does to a VM in ctx.state; None: nothing."""
    rule = _RULES.get(ctx.state, _no_domain)
    return rule(ctx, event)


DOMAIN_STATES = frozenset(
    {
        VmState.RUNNING,
        VmState.PAUSED,
        VmState.POWERING_DOWN,
        VmState.REBOOT_IN_PROGRESS,
        VmState.SAVING_STATE,
        VmState.MIGRATING_FROM,
    }
)
"""States in which the VM's domain runs (paused or not): its guest channel is open,
its statistics can be read, and GetHostStats counts it running."""


class Verb(Enum):
    """The verbs that need the VM in some states; the value is how errors say it."""

    SHUTDOWN = "shut down"
    REBOOT = "reboot"
    RESET = "reset"
    PAUSE = "pause"
    RESUME = "resume"
    HIBERNATE = "hibernate"
    STATS = "read the statistics of"
    MIGRATE = "migrate"
    CANCEL_MIGRATION = "cancel the migration of"


ALLOWED: dict[Verb, frozenset[VmState]] = {
    Verb.SHUTDOWN: frozenset({VmState.RUNNING, VmState.POWERING_DOWN}),
    Verb.REBOOT: frozenset({VmState.RUNNING}),
    Verb.RESET: frozenset({VmState.RUNNING, VmState.PAUSED, VmState.REBOOT_IN_PROGRESS}),
    Verb.PAUSE: frozenset({VmState.RUNNING}),
    Verb.RESUME: frozenset({VmState.PAUSED}),
    Verb.HIBERNATE: frozenset({VmState.RUNNING, VmState.PAUSED}),
    Verb.STATS: DOMAIN_STATES,
    Verb.MIGRATE: frozenset({VmState.RUNNING}),
    Verb.CANCEL_MIGRATION: frozenset({VmState.MIGRATING_FROM, VmState.MIGRATING_TO}),
}
"""The states each verb is allowed in; DestroyVm is allowed in all."""


def require(verb: Verb, vm_id: str, state: VmState) -> None:
    """Raises VmStateConflict, naming the state, when verb is not allowed in it."""
    if state not in ALLOWED[verb]:
        raise VmStateConflict(verb.value, vm_id, state.name)
