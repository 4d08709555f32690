"""A background loop of the controller: one step every interval seconds,
or sooner when its Wakeup is nudged (controller.wakeup), until stopped.

A step that fails is logged and tried again at the next turn; the loop
never dies of it. The HA restarter, the migration queue and the evacuation
each run on one.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from controller.wakeup import Wakeup

log = logging.getLogger(__name__)


class Periodic:
    """step() run in a loop named name, every interval seconds or when woken."""

    def __init__(
        self,
        name: str,
        step: Callable[[], Awaitable[object]],
        interval: float,
        wakeup: Wakeup | None = None,
    ) -> None:
        self._name = name
        self._step = step
        self._interval = interval
        self.wakeup = wakeup or Wakeup()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name=self._name)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def _loop(self) -> None:
        while True:
            try:
                await self._step()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("%s: its step failed; trying again", self._name)
            await self.wakeup.wait(self._interval)
