"""The pure state rules: each event in each state, and which verbs each state allows."""

from __future__ import annotations

import pytest

from hostd.errors import VmStateConflict
from hostd.hypervisor import LifecycleEvent, LifecycleKind, StopReason
from hostd.model import ExitReason, VmState
from hostd.state_machine import ALLOWED, Become, Context, ResetSeen, Verb, on_event, require

K = LifecycleKind
VM = "6f1c9a52-3d0e-4b7a-9a51-0c2d8e4f7b13"


def _on(state: VmState, kind: K, reason: StopReason | None = None, **ctx: bool) -> object:
    return on_event(Context(state, **ctx), LifecycleEvent(VM, kind, reason))


@pytest.mark.parametrize(
    ("state", "kind", "outcome"),
    [
        (VmState.WAIT_FOR_LAUNCH, K.STARTED, Become(VmState.RUNNING)),
        (VmState.WAIT_FOR_LAUNCH, K.RESUMED, Become(VmState.RUNNING)),
        (VmState.WAIT_FOR_LAUNCH, K.STOPPED, None),  # a late stop of an earlier domain
        (VmState.WAIT_FOR_LAUNCH, K.REBOOTED, None),
        (VmState.RESTORING_STATE, K.STARTED, Become(VmState.RUNNING)),
        (VmState.RESTORING_STATE, K.STOPPED, None),  # the save's own STOPPED, late
        (VmState.RUNNING, K.STARTED, None),  # a late boot event
        (VmState.PAUSED, K.STARTED, None),
        (VmState.RUNNING, K.SUSPENDED, Become(VmState.PAUSED)),
        (VmState.PAUSED, K.RESUMED, Become(VmState.RUNNING)),
        (VmState.RUNNING, K.SHUTDOWN, Become(VmState.POWERING_DOWN)),
        (VmState.RUNNING, K.REBOOTED, ResetSeen()),
        (VmState.PAUSED, K.REBOOTED, None),  # reset while paused: it reboots when resumed
        (VmState.RUNNING, K.OTHER, None),
        (VmState.REBOOT_IN_PROGRESS, K.REBOOTED, ResetSeen()),
        (VmState.REBOOT_IN_PROGRESS, K.SHUTDOWN, None),
        (VmState.REBOOT_IN_PROGRESS, K.SUSPENDED, None),
        (VmState.REBOOT_IN_PROGRESS, K.RESUMED, None),
        (VmState.SAVING_STATE, K.SUSPENDED, None),
        (VmState.SAVING_STATE, K.RESUMED, None),
        (VmState.SUSPENDED, K.STARTED, None),
        (VmState.SUSPENDED, K.STOPPED, None),
    ],
)
def test_events(state: VmState, kind: K, outcome: object) -> None:
    assert _on(state, kind) == outcome


def test_a_paused_start_comes_up_paused() -> None:
    assert _on(VmState.WAIT_FOR_LAUNCH, K.STARTED, start_paused=True) == Become(VmState.PAUSED)
    assert _on(VmState.RESTORING_STATE, K.STARTED, start_paused=True) == Become(VmState.PAUSED)


def test_the_shutdown_of_a_kill_is_no_powering_down() -> None:
    assert _on(VmState.RUNNING, K.SHUTDOWN, destroying=True) is None


@pytest.mark.parametrize(
    "state",
    [VmState.RUNNING, VmState.PAUSED, VmState.POWERING_DOWN, VmState.REBOOT_IN_PROGRESS],
)
def test_a_real_stop_is_down_with_its_reason(state: VmState) -> None:
    assert _on(state, K.STOPPED, StopReason.SHUTDOWN) == Become(
        VmState.DOWN, ExitReason.SHUTDOWN, "the guest powered off"
    )
    assert _on(state, K.CRASHED, StopReason.CRASHED) == Become(
        VmState.DOWN, ExitReason.CRASHED, "the guest crashed"
    )


def test_a_save_ends_by_its_job_not_by_its_event() -> None:
    assert _on(VmState.SAVING_STATE, K.STOPPED, StopReason.SAVED) is None
    assert _on(VmState.SAVING_STATE, K.STOPPED, StopReason.DESTROYED) == Become(
        VmState.DOWN, ExitReason.DESTROYED, "destroyed"
    )


def test_a_reboot_never_looks_like_a_stop() -> None:
    # What libvirt may send while a guest reboots: no outcome is a stop.
    for kind in (K.SHUTDOWN, K.SUSPENDED, K.RESUMED, K.REBOOTED, K.OTHER):
        outcome = _on(VmState.REBOOT_IN_PROGRESS, kind)
        assert not isinstance(outcome, Become), kind


def test_verbs_name_the_state_they_refuse() -> None:
    with pytest.raises(VmStateConflict, match=f"^cannot pause VM {VM}: it is PAUSED$"):
        require(Verb.PAUSE, VM, VmState.PAUSED)
    with pytest.raises(
        VmStateConflict, match=r"cannot read the statistics of VM .*: it is SUSPENDED"
    ):
        require(Verb.STATS, VM, VmState.SUSPENDED)
    require(Verb.RESET, VM, VmState.REBOOT_IN_PROGRESS)


def test_no_verb_is_allowed_without_a_domain() -> None:
    for verb, states in ALLOWED.items():
        for state in (VmState.WAIT_FOR_LAUNCH, VmState.RESTORING_STATE, VmState.SUSPENDED):
            assert state not in states, verb


def test_the_migration_sequence_libvirt_reports() -> None:
    """Destination STARTED, source SUSPENDED, destination RESUMED, source STOPPED (MIGRATED)."""
    dest, source = VmState.MIGRATING_TO, VmState.MIGRATING_FROM
    assert _on(dest, K.STARTED) is None, "the incoming domain exists, paused"
    assert _on(source, K.SUSPENDED) is None, "the switch-over is no pause"
    assert _on(dest, K.RESUMED) == Become(VmState.RUNNING, message="migrated here")
    assert _on(source, K.STOPPED, StopReason.MIGRATED) == Become(
        VmState.DOWN, ExitReason.MIGRATED, "migrated to another host"
    )


@pytest.mark.parametrize("reason", [StopReason.FAILED, StopReason.DESTROYED])
def test_a_failed_incoming_migration_is_down(reason: StopReason) -> None:
    outcome = _on(VmState.MIGRATING_TO, K.STOPPED, reason)
    assert isinstance(outcome, Become)
    assert (outcome.state, outcome.exit_reason) == (VmState.DOWN, ExitReason.MIGRATION_FAILED)


def test_the_source_resumed_after_a_failed_switch_over_is_left_to_the_job() -> None:
    assert _on(VmState.MIGRATING_FROM, K.RESUMED) is None
    assert _on(VmState.MIGRATING_FROM, K.CRASHED, StopReason.CRASHED) == Become(
        VmState.DOWN, ExitReason.CRASHED, "the guest crashed"
    )


def test_only_a_running_vm_migrates_and_only_a_migrating_one_is_cancelled() -> None:
    require(Verb.MIGRATE, VM, VmState.RUNNING)
    with pytest.raises(VmStateConflict, match=f"cannot migrate VM {VM}: it is PAUSED"):
        require(Verb.MIGRATE, VM, VmState.PAUSED)
    for state in (VmState.MIGRATING_FROM, VmState.MIGRATING_TO):
        require(Verb.CANCEL_MIGRATION, VM, state)
    with pytest.raises(VmStateConflict, match="it is RUNNING"):
        require(Verb.CANCEL_MIGRATION, VM, VmState.RUNNING)
