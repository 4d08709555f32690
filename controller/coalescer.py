"""Coalescing a VM's reports: at most one database write per VM per interval.

A guest may report many times a second (hostd lets 20 messages/s through),
a migration's source about once a second; each report is whole (the merged
GuestInfo, the transfer's statistics so far), so only the latest matters.
The monitor keeps one Coalescer per kind of report
(guest reports, and migrations' progress: controller.migration_progress). The
first report of a quiet VM is written at once; one arriving within interval
of the VM's last write waits, replaced by any later one, and is written when
the interval is up. The last report is thus always written, at most interval
late. flush() writes a waiting report at once: the monitor calls it before a
VM's state event so that writes keep the order of the events.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Generic, Protocol, TypeVar

log = logging.getLogger(__name__)


class Report(Protocol):
    """A report about one VM."""

    @property
    def vm_id(self) -> str: ...


R = TypeVar("R", bound=Report)

DEFAULT_INTERVAL = 1.0


class Coalescer(Generic[R]):
    """One host's reports of one kind on their way to the database."""

    def __init__(
        self,
        write: Callable[[R, dt.datetime], Awaitable[None]],
        lock: asyncio.Lock,
        interval: float = DEFAULT_INTERVAL,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        """write: stores one report, received at the given time. lock: held
        around every write made on a timer (the monitor's lock, which offer()
        and flush() are called under)."""
        self._write = write
        self._lock = lock
        self._interval = interval
        self._monotonic = monotonic
        self._last_write: dict[str, float] = {}
        self._pending: dict[str, tuple[R, dt.datetime]] = {}
        self._timers: dict[str, asyncio.Task[None]] = {}
        self._pruned = monotonic()
        self.writes = 0
        """Reports written so far."""
        self.coalesced = 0
        """Reports replaced by a later one before they were written."""

    async def offer(self, report: R, received: dt.datetime) -> None:
        """A report arrived: written now, or when the VM's interval is up."""
        vm_id = report.vm_id
        now = self._monotonic()
        last = self._last_write.get(vm_id)
        if vm_id not in self._pending and (last is None or now - last >= self._interval):
            await self._store(vm_id, report, received)
            return
        if vm_id in self._pending:
            self.coalesced += 1
        self._pending[vm_id] = (report, received)
        if vm_id not in self._timers:
            due = (last if last is not None else now) + self._interval - now
            self._timers[vm_id] = asyncio.create_task(self._later(vm_id, max(0.0, due)))

    async def flush(self, vm_id: str) -> None:
        """Writes the VM's waiting report, if it has one, now."""
        timer = self._timers.pop(vm_id, None)
        if timer is not None and timer is not asyncio.current_task():
            timer.cancel()
        waiting = self._pending.pop(vm_id, None)
        if waiting is not None:
            await self._store(vm_id, *waiting)

    async def close(self) -> None:
        """Writes every waiting report and stops the timers."""
        for vm_id in list(self._pending):
            try:
                await self.flush(vm_id)
            except Exception:  # closing: the database may be going too
                log.warning("guest report of VM %s not written at close", vm_id, exc_info=True)
        timers = list(self._timers.values())
        self._timers.clear()
        for timer in timers:
            timer.cancel()
        await asyncio.gather(*timers, return_exceptions=True)

    async def _later(self, vm_id: str, delay: float) -> None:
        await asyncio.sleep(delay)
        async with self._lock:
            if self._timers.get(vm_id) is asyncio.current_task():
                await self.flush(vm_id)

    async def _store(self, vm_id: str, report: R, received: dt.datetime) -> None:
        now = self._monotonic()
        if now - self._pruned >= self._interval:  # forget VMs quiet for an interval
            self._pruned = now
            self._last_write = {
                k: t for k, t in self._last_write.items() if now - t < self._interval
            }
        self._last_write[vm_id] = now
        self.writes += 1
        await self._write(report, received)
