"""The stall detector and the convergence verdicts, fed synthetic samples
(remaining bytes, time in seconds): no clock is read."""

from __future__ import annotations

import pytest

from hostd.convergence import MIB, Convergence, MigrationPolicy, StallDetector, Verdict
from virtplane_common.errors import InvalidArgument


def _stalls(detector: StallDetector, samples: list[tuple[int, float]]) -> list[bool]:
    return [detector.observe(remaining, now) for remaining, now in samples]


def test_a_shrinking_transfer_never_stalls() -> None:
    samples = [(100 * MIB - i * MIB, float(i)) for i in range(60)]
    assert not any(_stalls(StallDetector(5), samples))


def test_a_flat_transfer_stalls_once_the_window_has_passed() -> None:
    samples = [(40 * MIB, float(t)) for t in range(7)]
    assert _stalls(StallDetector(5), samples) == [False] * 5 + [True, True]


def test_rising_and_falling_above_the_lowest_is_no_progress() -> None:
    # Each pass resends what the guest dirtied: it goes up and down, never below 30 MiB.
    samples = [(30 * MIB, 0.0), (50 * MIB, 1.0), (31 * MIB, 2.0), (45 * MIB, 3.0), (30 * MIB, 4.0)]
    assert _stalls(StallDetector(4), samples) == [False, False, False, False, True]


def test_a_new_low_restarts_the_window() -> None:
    detector = StallDetector(3)
    assert _stalls(detector, [(10 * MIB, 0.0), (10 * MIB, 2.0), (9 * MIB, 2.5)]) == [False] * 3
    assert detector.observe(9 * MIB, 5.0) is False
    assert detector.observe(9 * MIB, 5.5) is True
    assert detector.lowest == 9 * MIB


def test_zero_remaining_is_not_judged() -> None:
    detector = StallDetector(1)
    assert _stalls(detector, [(0, 0.0), (0, 5.0), (8 * MIB, 6.0), (0, 9.0)]) == [False] * 4
    assert detector.observe(8 * MIB, 7.0) is True


def test_a_window_of_zero_never_stalls() -> None:
    assert not any(_stalls(StallDetector(0), [(MIB, float(t)) for t in range(10)]))


def test_a_stall_aborts_with_the_lowest_and_the_window() -> None:
    convergence = Convergence(MigrationPolicy(stall_seconds=3), started=100.0)
    verdicts = [convergence.observe(r * MIB, t) for r, t in ((20, 101), (25, 102), (21, 104))]
    assert verdicts == [Verdict.GO_ON, Verdict.GO_ON, Verdict.ABORT]
    assert convergence.reason == "stalled: data remaining has not shrunk below 20 MiB for 3 s"
    assert convergence.observe(25 * MIB, 110) is Verdict.GO_ON, "decided once"
    assert not convergence.post_copy


def test_a_stall_switches_to_post_copy_when_allowed_and_then_nothing_more() -> None:
    policy = MigrationPolicy(stall_seconds=2, allow_post_copy=True)
    convergence = Convergence(policy, started=0.0)
    assert convergence.observe(MIB // 2, 1.0) is Verdict.GO_ON
    assert convergence.observe(MIB, 3.0) is Verdict.POST_COPY
    assert convergence.reason == "stalled: data remaining has not shrunk below 0.5 MiB for 2 s"
    assert convergence.post_copy
    assert convergence.observe(MIB, 60.0) is Verdict.GO_ON


def test_without_stall_seconds_only_the_completion_timeout_ends_it() -> None:
    convergence = Convergence(MigrationPolicy(completion_timeout_seconds=30), started=10.0)
    assert [convergence.observe(MIB, t) for t in (11.0, 25.0, 39.0)] == [Verdict.GO_ON] * 3
    assert convergence.observe(MIB, 40.0) is Verdict.ABORT
    assert convergence.reason == "not completed within 30 s"


def test_an_empty_policy_never_ends_a_migration() -> None:
    convergence = Convergence(MigrationPolicy(), started=0.0)
    assert {convergence.observe(MIB, float(t)) for t in range(0, 100_000, 1000)} == {Verdict.GO_ON}


@pytest.mark.parametrize(
    "field", ["max_downtime_ms", "stall_seconds", "completion_timeout_seconds"]
)
def test_a_negative_value_is_refused_naming_its_field(field: str) -> None:
    with pytest.raises(InvalidArgument, match=rf"policy\.{field}"):
        MigrationPolicy(**{field: -1}).check()  # type: ignore[arg-type]
