"""controller.periodic: a step that fails is tried again, a nudge runs the
next step at once, and stop() ends the loop."""

from __future__ import annotations

import asyncio

from controller.periodic import Periodic

LONG = 3600.0
"""An interval no test waits out: a step after the first was woken."""


async def test_a_failing_step_is_tried_again_and_a_nudge_runs_the_next_at_once() -> None:
    ran: list[int] = []
    third = asyncio.Event()

    async def step() -> None:
        ran.append(len(ran))
        if len(ran) == 3:
            third.set()
        if len(ran) == 1:
            raise RuntimeError("the first step fails")

    loop = Periodic("test-loop", step, LONG)
    loop.start()
    try:
        for _ in range(2):
            await asyncio.sleep(0.2)
            loop.wakeup.nudge()
        async with asyncio.timeout(30):
            await third.wait()
    finally:
        await loop.stop()
    count = len(ran)
    await asyncio.sleep(0.2)
    loop.wakeup.nudge()
    assert len(ran) == count == 3  # stopped: no step after stop()
