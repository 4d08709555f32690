"""A token bucket: how much an untrusted peer may send per second."""

from __future__ import annotations

import time
from collections.abc import Callable


class TokenBucket:
    """rate tokens per second, holding at most burst."""

    def __init__(
        self, rate: float, burst: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if rate <= 0 or burst <= 0:
            raise ValueError("rate and burst must be positive")
        self._rate = rate
        self._burst = burst
        self._clock = clock
        self._tokens = burst
        self._at = clock()

    def _refill(self) -> None:
        now = self._clock()
        self._tokens = min(self._burst, self._tokens + (now - self._at) * self._rate)
        self._at = now

    def try_take(self, amount: float = 1.0) -> bool:
        """Takes amount if it is there; otherwise takes nothing."""
        self._refill()
        if self._tokens >= amount:
            self._tokens -= amount
            return True
        return False

    def take(self, amount: float) -> float:
        """Takes amount, going into debt if need be; returns the seconds to
        wait until the debt is repaid (0 when there is none)."""
        self._refill()
        self._tokens -= amount
        return max(0.0, -self._tokens / self._rate)
