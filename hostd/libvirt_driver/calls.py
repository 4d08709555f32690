"""Blocking libvirt calls, run on libvirt's own bounded thread pool with a
timeout each: a call that does not return in time (libvirtd wedged, a
domain's QEMU stuck) fails with LibvirtCallTimedOut (UNAVAILABLE, naming the
operation) instead of holding its RPC; its thread stays busy until libvirt
returns. Calls beyond the pool's threads wait for one, and that wait counts
toward their timeout. libvirt errors become hostd.errors here, once."""

from __future__ import annotations

import asyncio
import concurrent.futures
import time
from collections.abc import Callable
from typing import TypeVar

import libvirt

from hostd.errors import HypervisorUnavailable
from hostd.libvirt_driver.translate import translate_error

T = TypeVar("T")

THREADS = 8
TIMEOUT_SECONDS = 60.0
NO_TIMEOUT = False  # for calls that run as long as their job (migrate, save, restore)


class LibvirtCallTimedOut(HypervisorUnavailable):
    """A libvirt call did not return within its timeout."""


class LibvirtCalls:
    """The pool libvirt's blocking calls run on, and their default timeout."""

    def __init__(self, threads: int = THREADS, timeout: float = TIMEOUT_SECONDS) -> None:
        if threads < 1 or timeout <= 0:
            raise ValueError("libvirt calls need at least one thread and a positive timeout")
        self.threads = threads
        self.timeout = timeout
        self._pool = concurrent.futures.ThreadPoolExecutor(threads, thread_name_prefix="libvirt")
        self.observer: Callable[[str, str, float], None] | None = None
        """Told (operation, outcome: ok, error or timeout, seconds) of each call
        (hostd.metrics)."""

    def shutdown(self) -> None:
        """Takes no new calls; those queued or running still finish."""
        self._pool.shutdown(wait=False)

    async def run(
        self,
        call: Callable[[], T],
        operation: str,
        uuid: str = "",
        timed: bool = True,
    ) -> T:
        """call() on the pool, within the timeout if timed."""
        limit = self.timeout
        started, outcome = time.perf_counter(), "error"
        future = asyncio.get_running_loop().run_in_executor(self._pool, call)
        try:
            result = await (future if not timed else asyncio.wait_for(future, limit))
            outcome = "ok"
            return result
        except TimeoutError as exc:
            outcome = "timeout"
            target = f" of domain {uuid}" if uuid else ""
            raise LibvirtCallTimedOut(
                f"libvirt did not finish {operation}{target} within {limit:g} s"
            ) from exc
        except libvirt.libvirtError as exc:
            raise translate_error(exc, uuid) from exc
        finally:
            if self.observer is not None:
                self.observer(operation, outcome, time.perf_counter() - started)


_calls = LibvirtCalls()


def configure(threads: int = THREADS, timeout: float = TIMEOUT_SECONDS) -> LibvirtCalls:
    """Replaces the process's pool (hostd's start, tests); returns the new one."""
    global _calls  # process-wide, as libvirt's event loop is
    old, _calls = _calls, LibvirtCalls(threads, timeout)
    old.shutdown()
    return _calls


def current() -> LibvirtCalls:
    return _calls


async def blocking(
    call: Callable[[], T],
    uuid: str = "",
    *,
    operation: str = "",
    timed: bool = True,
) -> T:
    """Runs a blocking libvirt call on the pool, translating its errors."""
    name = operation or getattr(call, "__name__", "a call")
    return await _calls.run(call, name, uuid, timed)
