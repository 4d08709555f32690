"""The pure state rules: each event in each state, and which verbs each state allows."""

from __future__ import annotations

import pytest
from virtplane.v1 import host_agent_service_pb2 as pb

from hostd.errors import VmStateConflict
from hostd.hypervisor import LifecycleEvent, LifecycleKind, StopReason
from hostd.state_machine import ALLOWED, Become, Context, ResetSeen, Verb, on_event, require

S = pb.HostVm
K = LifecycleKind
VM = "6f1c9a52-3d0e-4b7a-9a51-0c2d8e4f7b13"


def _on(state: S.State.ValueType, kind: K, reason: StopReason | None = None, **ctx: bool) -> object:
    return on_event(Context(state, **ctx), LifecycleEvent(VM, kind, reason))


@pytest.mark.parametrize(
    ("state", "kind", "outcome"),
    [
        (S.STATE_WAIT_FOR_LAUNCH, K.STARTED, Become(S.STATE_RUNNING)),
        (S.STATE_WAIT_FOR_LAUNCH, K.RESUMED, Become(S.STATE_RUNNING)),
        (S.STATE_WAIT_FOR_LAUNCH, K.STOPPED, None),  # a late stop of an earlier domain
        (S.STATE_WAIT_FOR_LAUNCH, K.REBOOTED, None),
        (S.STATE_RESTORING_STATE, K.STARTED, Become(S.STATE_RUNNING)),
        (S.STATE_RESTORING_STATE, K.STOPPED, None),  # the save's own STOPPED, late
        (S.STATE_RUNNING, K.STARTED, None),  # a late boot event
        (S.STATE_PAUSED, K.STARTED, None),
        (S.STATE_RUNNING, K.SUSPENDED, Become(S.STATE_PAUSED)),
        (S.STATE_PAUSED, K.RESUMED, Become(S.STATE_RUNNING)),
        (S.STATE_RUNNING, K.SHUTDOWN, Become(S.STATE_POWERING_DOWN)),
        (S.STATE_RUNNING, K.REBOOTED, ResetSeen()),
        (S.STATE_PAUSED, K.REBOOTED, None),  # reset while paused: it reboots when resumed
        (S.STATE_RUNNING, K.OTHER, None),
        (S.STATE_REBOOT_IN_PROGRESS, K.REBOOTED, ResetSeen()),
        (S.STATE_REBOOT_IN_PROGRESS, K.SHUTDOWN, None),
        (S.STATE_REBOOT_IN_PROGRESS, K.SUSPENDED, None),
        (S.STATE_REBOOT_IN_PROGRESS, K.RESUMED, None),
        (S.STATE_SAVING_STATE, K.SUSPENDED, None),
        (S.STATE_SAVING_STATE, K.RESUMED, None),
        (S.STATE_SUSPENDED, K.STARTED, None),
        (S.STATE_SUSPENDED, K.STOPPED, None),
    ],
)
def test_events(state: S.State.ValueType, kind: K, outcome: object) -> None:
    assert _on(state, kind) == outcome


def test_a_paused_start_comes_up_paused() -> None:
    assert _on(S.STATE_WAIT_FOR_LAUNCH, K.STARTED, start_paused=True) == Become(S.STATE_PAUSED)
    assert _on(S.STATE_RESTORING_STATE, K.STARTED, start_paused=True) == Become(S.STATE_PAUSED)


def test_the_shutdown_of_a_kill_is_no_powering_down() -> None:
    assert _on(S.STATE_RUNNING, K.SHUTDOWN, destroying=True) is None


@pytest.mark.parametrize(
    "state",
    [S.STATE_RUNNING, S.STATE_PAUSED, S.STATE_POWERING_DOWN, S.STATE_REBOOT_IN_PROGRESS],
)
def test_a_real_stop_is_down_with_its_reason(state: S.State.ValueType) -> None:
    assert _on(state, K.STOPPED, StopReason.SHUTDOWN) == Become(
        S.STATE_DOWN, S.EXIT_REASON_SHUTDOWN, "the guest powered off"
    )
    assert _on(state, K.CRASHED, StopReason.CRASHED) == Become(
        S.STATE_DOWN, S.EXIT_REASON_CRASHED, "the guest crashed"
    )


def test_a_save_ends_by_its_job_not_by_its_event() -> None:
    assert _on(S.STATE_SAVING_STATE, K.STOPPED, StopReason.SAVED) is None
    assert _on(S.STATE_SAVING_STATE, K.STOPPED, StopReason.DESTROYED) == Become(
        S.STATE_DOWN, S.EXIT_REASON_DESTROYED, "destroyed"
    )


def test_a_reboot_never_looks_like_a_stop() -> None:
    # What libvirt may send while a guest reboots: no outcome is a stop.
    for kind in (K.SHUTDOWN, K.SUSPENDED, K.RESUMED, K.REBOOTED, K.OTHER):
        outcome = _on(S.STATE_REBOOT_IN_PROGRESS, kind)
        assert not isinstance(outcome, Become), kind


def test_verbs_name_the_state_they_refuse() -> None:
    with pytest.raises(VmStateConflict, match=f"^cannot pause VM {VM}: it is PAUSED$"):
        require(Verb.PAUSE, VM, S.STATE_PAUSED)
    with pytest.raises(
        VmStateConflict, match=r"cannot read the statistics of VM .*: it is SUSPENDED"
    ):
        require(Verb.STATS, VM, S.STATE_SUSPENDED)
    require(Verb.RESET, VM, S.STATE_REBOOT_IN_PROGRESS)


def test_no_verb_is_allowed_without_a_domain() -> None:
    for verb, states in ALLOWED.items():
        for state in (S.STATE_WAIT_FOR_LAUNCH, S.STATE_RESTORING_STATE, S.STATE_SUSPENDED):
            assert state not in states, verb


def test_the_migration_sequence_libvirt_reports() -> None:
    """Destination STARTED, source SUSPENDED, destination RESUMED, source STOPPED (MIGRATED)."""
    dest, source = S.STATE_MIGRATING_TO, S.STATE_MIGRATING_FROM
    assert _on(dest, K.STARTED) is None, "the incoming domain exists, paused"
    assert _on(source, K.SUSPENDED) is None, "the switch-over is no pause"
    assert _on(dest, K.RESUMED) == Become(S.STATE_RUNNING, message="migrated here")
    assert _on(source, K.STOPPED, StopReason.MIGRATED) == Become(
        S.STATE_DOWN, S.EXIT_REASON_MIGRATED, "migrated to another host"
    )


@pytest.mark.parametrize("reason", [StopReason.FAILED, StopReason.DESTROYED])
def test_a_failed_incoming_migration_is_down(reason: StopReason) -> None:
    outcome = _on(S.STATE_MIGRATING_TO, K.STOPPED, reason)
    assert isinstance(outcome, Become)
    assert (outcome.state, outcome.exit_reason) == (S.STATE_DOWN, S.EXIT_REASON_MIGRATION_FAILED)


def test_the_source_resumed_after_a_failed_switch_over_is_left_to_the_job() -> None:
    assert _on(S.STATE_MIGRATING_FROM, K.RESUMED) is None
    assert _on(S.STATE_MIGRATING_FROM, K.CRASHED, StopReason.CRASHED) == Become(
        S.STATE_DOWN, S.EXIT_REASON_CRASHED, "the guest crashed"
    )


def test_only_a_running_vm_migrates_and_only_a_migrating_one_is_cancelled() -> None:
    require(Verb.MIGRATE, VM, S.STATE_RUNNING)
    with pytest.raises(VmStateConflict, match=f"cannot migrate VM {VM}: it is PAUSED"):
        require(Verb.MIGRATE, VM, S.STATE_PAUSED)
    for state in (S.STATE_MIGRATING_FROM, S.STATE_MIGRATING_TO):
        require(Verb.CANCEL_MIGRATION, VM, state)
    with pytest.raises(VmStateConflict, match="it is RUNNING"):
        require(Verb.CANCEL_MIGRATION, VM, S.STATE_RUNNING)
