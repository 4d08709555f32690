"""Waking a polling loop early.

The migration queue and the evacuation look at the database every few
seconds; what they wait for (a migration's end frees a slot, a VM leaves a
host preparing for maintenance) always shows as a VM change the store
publishes. A loop with work in hand (busy) wakes on each such change
instead of sleeping out its interval; an idle one sleeps it out, so that a
busy fleet's thousands of changes cost an idle loop nothing. A nudge for the
loop itself (a host just asked to evacuate) wakes it either way. Between two
looks there are at least min_gap seconds, however many changes come.
"""

from __future__ import annotations

import asyncio
import contextlib


class Wakeup:
    """One loop's alarm: wait() returns after interval seconds, or earlier
    once nudged (nudge(), or changed() while busy)."""

    def __init__(self, min_gap: float = 0.1) -> None:
        self._min_gap = min_gap
        self._event = asyncio.Event()
        self.busy = False

    def nudge(self) -> None:
        """Wake the loop whatever it is doing."""
        self._event.set()

    def changed(self) -> None:
        """Something the loop may be waiting for happened: wake it if busy."""
        if self.busy:
            self._event.set()

    async def wait(self, interval: float) -> None:
        await asyncio.sleep(min(self._min_gap, interval))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._event.wait(), max(0.0, interval - self._min_gap))
        self._event.clear()
