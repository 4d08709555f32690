"""controller.wakeup: a polling loop woken early by a nudge, or by a VM
change while it is busy, and never by a change while it is idle."""

from __future__ import annotations

import asyncio

import pytest

from controller.wakeup import Wakeup

LONG = 3600.0
"""An interval no test waits out: wait() returning means it was woken."""


async def test_a_nudge_wakes_an_idle_loop() -> None:
    wakeup = Wakeup(min_gap=0.0)
    waiting = asyncio.create_task(wakeup.wait(LONG))
    await asyncio.sleep(0)
    wakeup.nudge()
    async with asyncio.timeout(30):
        await waiting


async def test_a_change_wakes_a_busy_loop_even_one_that_came_before_it_slept() -> None:
    wakeup = Wakeup(min_gap=0.0)
    wakeup.busy = True
    wakeup.changed()  # during the loop's look, before it waits
    async with asyncio.timeout(30):
        await wakeup.wait(LONG)


async def test_a_change_leaves_an_idle_loop_asleep() -> None:
    wakeup = Wakeup(min_gap=0.0)
    waiting = asyncio.create_task(wakeup.wait(LONG))
    await asyncio.sleep(0)
    wakeup.changed()
    await asyncio.sleep(0.05)
    assert not waiting.done()
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting


async def test_one_wake_is_spent_by_one_wait() -> None:
    wakeup = Wakeup(min_gap=0.0)
    wakeup.nudge()
    wakeup.nudge()
    async with asyncio.timeout(30):
        await wakeup.wait(LONG)
    second = asyncio.create_task(wakeup.wait(LONG))
    await asyncio.sleep(0.05)
    assert not second.done()
    second.cancel()
    with pytest.raises(asyncio.CancelledError):
        await second
