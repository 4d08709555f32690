"""Waiting in tests: the one polling helper, `until` (and `until_sync` for
blocking code), and `next_item` for the next item of a stream.

A wait that times out fails the test saying what it awaited and the last
value it saw. Deadlines are generous: they are reached only when something
is broken, so no test's duration depends on them.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, NoReturn, TypeVar, overload

import pytest

T = TypeVar("T")

TIMEOUT = 60.0
"""The default deadline, in seconds."""
EVERY = 0.01
"""The default pause between two looks, in seconds."""


@overload
async def until(
    fetch: Callable[..., Awaitable[T]],
    check: Callable[[T], object] = ...,
    *,
    what: str = "",
    within: float = TIMEOUT,
    every: float = EVERY,
) -> T: ...
@overload
async def until(
    fetch: Callable[..., T],
    check: Callable[[T], object] = ...,
    *,
    what: str = "",
    within: float = TIMEOUT,
    every: float = EVERY,
) -> T: ...
async def until(
    fetch: Callable[..., Any],
    check: Callable[[Any], object] = bool,
    *,
    what: str = "",
    within: float = TIMEOUT,
    every: float = EVERY,
) -> Any:
    """Calls fetch() (a plain or an async function) every `every` seconds
    until check accepts what it returns (by default: until it is truthy), and
    returns that value (fetch may have parameters with defaults, never given).
    Fails the test after `within` seconds, saying `what`
    it awaited (by default the source of check or fetch) and the last value."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    value: Any = None
    while True:
        fetched = fetch()
        if inspect.isawaitable(fetched):
            try:
                async with asyncio.timeout_at(deadline):
                    fetched = await fetched
            except TimeoutError:
                _timed_out(within, what or _describe(fetch, check), value)
        value = fetched
        if check(value):
            return value
        if loop.time() > deadline:
            _timed_out(within, what or _describe(fetch, check), value)
        await asyncio.sleep(every)


def until_sync(
    fetch: Callable[[], T],
    check: Callable[[T], object] = bool,
    *,
    what: str = "",
    within: float = TIMEOUT,
    every: float = EVERY,
) -> T:
    """until, for blocking code: sleeps between the looks."""
    deadline = time.monotonic() + within
    while True:
        value = fetch()
        if check(value):
            return value
        if time.monotonic() > deadline:
            _timed_out(within, what or _describe(fetch, check), value)
        time.sleep(every)


async def next_item(items: AsyncIterator[T], what: str, within: float = TIMEOUT) -> T:
    """The next item of an async iterator; fails the test after `within` seconds."""
    try:
        return await asyncio.wait_for(anext(items), within)
    except TimeoutError:
        pytest.fail(f"timed out after {within}s waiting for {what}")


def _timed_out(within: float, what: str, last: object) -> NoReturn:
    pytest.fail(f"timed out after {within}s waiting for {what}; last seen: {last!r}")


def _describe(fetch: Callable[..., object], check: Callable[..., object]) -> str:
    """The source of check (of fetch when check is the default), on one line."""
    function = fetch if check is bool else check
    try:
        source = inspect.getsource(function)
    except (OSError, TypeError):
        return getattr(function, "__qualname__", repr(function))
    return " ".join(source.split())[:300]
