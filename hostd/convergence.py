"""A live migration's convergence: the policy it runs under, and the stall
detector that decides, from its progress samples, when to give up on it.

A pre-copy migration converges while the hypervisor sends memory faster than
the guest dirties it: the data remaining shrinks pass after pass until it
fits in the allowed downtime. When it does not, a fixed timeout alone would
abort migrations that are slow but progressing; so, as KubeVirt does, the
migration is judged on progress instead: when the data remaining has not gone
below its lowest value so far for stall_seconds, it has stalled. A stalled
migration switches to post-copy when the policy allows (the guest runs on
the destination at once and pulls the rest), else it is aborted and the VM
runs on at its source. completion_timeout_seconds stays as a backstop.

Pure: StallDetector and Convergence take samples with their time, read no
clock, do nothing; hostd.migration reads the progress and acts.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum, auto

from virtplane_common.errors import InvalidArgument

MIB = 1 << 20


@dataclass(frozen=True)
class MigrationPolicy:
    """How one migration is to converge; every 0 or False: the hypervisor's default."""

    max_downtime_ms: int = 0
    """The longest the guest may be stopped at the switch-over; 0: the hypervisor's
    default (QEMU: 300 ms)."""
    auto_converge: bool = False
    """Throttle the guest's vCPUs while it dirties memory faster than it is sent."""
    allow_post_copy: bool = False
    """A stalled migration switches to post-copy rather than being aborted."""
    stall_seconds: int = 0
    """How long the data remaining may stay above its lowest value before the
    migration counts as stalled; 0: never."""
    completion_timeout_seconds: int = 0
    """The backstop: a migration still transferring after this long is aborted
    (or switched to post-copy when allowed); 0: never."""

    def check(self) -> MigrationPolicy:
        """This policy, or InvalidArgument naming the first field out of range."""
        for name in (
            "max_downtime_ms",
            "stall_seconds",
            "completion_timeout_seconds",
        ):
            value = getattr(self, name)
            if value < 0:
                raise InvalidArgument(f"policy.{name}", f"{value} is negative; 0 means off")
        return self


class Verdict(Enum):
    GO_ON = auto()
    POST_COPY = auto()
    """Switch the migration to post-copy now."""
    ABORT = auto()
    """Abort the migration: Convergence.reason says why."""


class StallDetector:
    """Whether the data remaining has stopped shrinking.

    It stalls when no sample has gone below the lowest remaining so far for
    window seconds. The first sample sets the lowest; each new low restarts
    the window. A sample of 0 remaining (the switch-over, or a job not yet
    counting) is no progress to judge and is ignored.
    """

    def __init__(self, window: float) -> None:
        self.window = window
        self.lowest: int | None = None
        self._lowest_at = 0.0

    def observe(self, remaining: int, now: float) -> bool:
        """Adds a sample (bytes remaining at now, in seconds); whether it has stalled."""
        if remaining <= 0:
            return False
        if self.lowest is None or remaining < self.lowest:
            self.lowest, self._lowest_at = remaining, now
            return False
        return self.window > 0 and now - self._lowest_at >= self.window


class Convergence:
    """One migration's verdicts under its policy, sample by sample."""

    def __init__(self, policy: MigrationPolicy, started: float) -> None:
        self.policy = policy
        self._started = started
        self._stall = StallDetector(policy.stall_seconds)
        self.post_copy = False
        """Switched to post-copy: it finishes by itself."""
        self.decided = False
        """A POST_COPY or ABORT verdict was given: every later one is GO_ON."""
        self.reason = ""
        """Why the last POST_COPY or ABORT verdict was given."""

    def observe(self, remaining: int, now: float) -> Verdict:
        if self.decided:
            return Verdict.GO_ON
        if self.policy.stall_seconds and self._stall.observe(remaining, now):
            self.reason = (
                f"stalled: data remaining has not shrunk below "
                f"{_mib(self._stall.lowest or remaining)} MiB "
                f"for {self.policy.stall_seconds} s"
            )
            return self._give_up()
        timeout = self.policy.completion_timeout_seconds
        if timeout and now - self._started >= timeout:
            self.reason = f"not completed within {timeout} s"
            return self._give_up()
        return Verdict.GO_ON

    def _give_up(self) -> Verdict:
        self.decided = True
        if self.policy.allow_post_copy:
            self.post_copy = True
            return Verdict.POST_COPY
        return Verdict.ABORT


def _mib(value: int) -> str:
    """Bytes as MiB, one decimal below 10 MiB."""
    mib = value / MIB
    return f"{mib:.1f}" if mib < 10 else f"{mib:.0f}"
