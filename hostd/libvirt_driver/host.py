"""The libvirt connection, kept up, with its events and the host's own facts (Nova's host.py).

- libvirt's own event loop runs on one daemon thread per process, registered
  before any connection opens. (libvirtaio is not used: libvirt calls its
  event hooks from whichever thread makes an API call, and libvirtaio then
  touches the asyncio loop from asyncio.to_thread's workers, which asyncio
  does not allow — events were lost under asyncio's debug mode.)
- The lifecycle and reboot callbacks only translate the event to a plain
  value and hand it to the asyncio loop, where it goes into a bounded queue;
  when the queue is full the event is dropped and the consumer later gets
  EventsLost.
- Blocking calls run on a bounded pool with a timeout each
  (hostd.libvirt_driver.calls.blocking()); libvirt errors become hostd.errors
  there, once (hostd.libvirt_driver.translate holds the tables).
- When libvirtd goes away (its socket closes: it stopped, restarted or
  died), libvirt's close callback says so: every call fails with
  HypervisorUnavailable, a ConnectionLost event is queued, and a task opens
  a new connection with backoff, registers the callbacks on it again and
  queues Reconnected (the consumer resyncs: events of the gap are lost).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator
from typing import Any, TypeVar

import libvirt

from hostd.errors import HypervisorUnavailable
from hostd.hypervisor import (
    ConnectionLost,
    EventsLost,
    HostInfo,
    HypervisorEvent,
    LifecycleEvent,
    LifecycleKind,
    Reconnected,
)
from hostd.libvirt_driver.calls import blocking
from hostd.libvirt_driver.translate import translate_lifecycle
from virtplane_common.errors import VirtplaneError

log = logging.getLogger(__name__)

T = TypeVar("T")

_CLOSE_REASONS = {
    libvirt.VIR_CONNECT_CLOSE_REASON_ERROR: "a connection error",
    libvirt.VIR_CONNECT_CLOSE_REASON_EOF: "libvirtd closed the connection",
    libvirt.VIR_CONNECT_CLOSE_REASON_KEEPALIVE: "libvirtd stopped answering",
}
RECONNECT_FIRST_SECONDS = 0.2


class _EventLoopThread:
    """libvirt's default event loop, run on a daemon thread; process-wide, as libvirt's is."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def ensure_running(self) -> None:
        with self._lock:
            if self._thread is not None:
                return
            # hostd reports every error itself; libvirt's default handler
            # would also print each one to stderr.
            libvirt.registerErrorHandler(_ignore_error, None)
            libvirt.virEventRegisterDefaultImpl()
            self._thread = threading.Thread(target=_run_events, name="libvirt-events", daemon=True)
            self._thread.start()


def _ignore_error(_ctx: object, _error: object) -> None:
    return None


def _run_events() -> None:
    while True:
        try:
            libvirt.virEventRunDefaultImpl()
        except libvirt.libvirtError:
            log.exception("libvirt's event loop failed an iteration")


_EVENT_LOOP = _EventLoopThread()


class EventQueue:
    """The events for hostd, in order. Lifecycle events are bounded (past the
    bound they are dropped, and EventsLost follows once the queue is drained);
    ConnectionLost and Reconnected always get in."""

    def __init__(self, size: int) -> None:
        self._queue: asyncio.Queue[HypervisorEvent] = asyncio.Queue()
        self._size = size
        self._dropped = 0

    def put(self, event: HypervisorEvent) -> None:
        """Queues an event of the connection's: never dropped."""
        self._queue.put_nowait(event)

    def put_lifecycle(self, event: LifecycleEvent) -> None:
        if self._queue.qsize() >= self._size:
            self._dropped += 1
        else:
            self._queue.put_nowait(event)

    async def events(self) -> AsyncIterator[HypervisorEvent]:
        while True:
            yield await self._queue.get()
            if self._dropped and self._queue.empty():
                dropped, self._dropped = self._dropped, 0
                log.warning("%d libvirt events were dropped; asking for a resync", dropped)
                yield EventsLost(dropped)


class LibvirtHost:
    """A libvirt connection, kept up. Create with ``await LibvirtHost.open(uri, ...)``."""

    def __init__(self, uri: str, queue: EventQueue, reconnect_max_seconds: float) -> None:
        self._conn: Any = None
        self.uri = uri
        self.queue = queue
        self._loop = asyncio.get_running_loop()
        self._callback_ids: list[int] = []
        self._graphics: frozenset[str] | None = None
        self._reconnect_max = reconnect_max_seconds
        self._reconnecting: asyncio.Task[None] | None = None
        self._lost_reason = ""
        self._closed = False

    @classmethod
    async def open(
        cls, uri: str, *, event_queue_size: int, reconnect_max_seconds: float
    ) -> LibvirtHost:
        """Connects; fails (HypervisorUnavailable) if libvirtd cannot be reached now."""
        _EVENT_LOOP.ensure_running()  # must precede the connection
        host = cls(uri, EventQueue(event_queue_size), reconnect_max_seconds)
        await host._connect()
        log.info("connected to libvirt at %s", uri)
        return host

    @property
    def connected(self) -> bool:
        return self._conn is not None

    @property
    def conn(self) -> Any:
        """The live connection; HypervisorUnavailable while there is none."""
        conn = self._conn
        if conn is None:
            raise HypervisorUnavailable(
                f"libvirt at {self.uri} is unreachable ({self._lost_reason}); hostd is reconnecting"
            )
        return conn

    async def _connect(self) -> None:
        conn = await blocking(lambda: libvirt.open(self.uri), operation="connect")
        callback_ids: list[int] = []
        try:
            for event_id, callback in (
                (libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE, self._on_lifecycle),
                (libvirt.VIR_DOMAIN_EVENT_ID_REBOOT, self._on_reboot),
            ):
                register = functools.partial(
                    conn.domainEventRegisterAny, None, event_id, callback, None
                )
                callback_ids.append(int(await blocking(register, operation="register events")))
            # No keepalive probes of hostd's own: on a busy host libvirtd is slow to
            # answer at times, and a probe would take it for gone.
            await blocking(functools.partial(conn.registerCloseCallback, self._on_close, None))
        except VirtplaneError:
            await asyncio.to_thread(_close_quietly, conn)
            raise
        self._conn, self._callback_ids = conn, callback_ids

    # -- the connection lost, and found again

    def _on_close(self, conn: Any, reason: int, _opaque: Any) -> None:
        """On libvirt's event thread: the connection closed."""
        if reason == libvirt.VIR_CONNECT_CLOSE_REASON_CLIENT:
            return  # hostd closed it
        with contextlib.suppress(RuntimeError):  # the loop is closed
            self._loop.call_soon_threadsafe(self._lost, conn, reason)

    def _lost(self, conn: Any, reason: int) -> None:
        if conn is not self._conn or self._closed:
            return  # an earlier connection's late word
        self._conn, self._callback_ids = None, []
        self._lost_reason = _CLOSE_REASONS.get(reason, f"closed, reason {reason}")
        log.warning("lost libvirt at %s: %s; reconnecting", self.uri, self._lost_reason)
        self.queue.put(ConnectionLost(self._lost_reason))
        self._reconnecting = self._loop.create_task(self._reconnect(conn), name="libvirt-reconnect")

    async def _reconnect(self, dead: Any) -> None:
        await asyncio.to_thread(_close_quietly, dead)
        lost_at = time.monotonic()
        wait = RECONNECT_FIRST_SECONDS
        attempts = 0
        while not self._closed:
            await asyncio.sleep(wait)
            attempts += 1
            try:
                await self._connect()
            except VirtplaneError as exc:
                if attempts == 1 or attempts % 10 == 0:
                    log.info("libvirt at %s still unreachable: %s", self.uri, exc)
                wait = min(wait * 2, self._reconnect_max)
                continue
            took = time.monotonic() - lost_at
            log.info("reconnected to libvirt at %s after %.1f s", self.uri, took)
            self.queue.put(Reconnected(took))
            return

    # -- events: on libvirt's event thread, translate, hand over, return.

    def _on_lifecycle(self, _conn: Any, dom: Any, event: int, detail: int, _opaque: Any) -> None:
        try:
            translated = translate_lifecycle(str(dom.UUIDString()), event, detail)
            self._loop.call_soon_threadsafe(self.queue.put_lifecycle, translated)
        except (libvirt.libvirtError, RuntimeError):  # RuntimeError: the loop is closed
            return

    def _on_reboot(self, _conn: Any, dom: Any, _opaque: Any) -> None:
        try:
            translated = LifecycleEvent(str(dom.UUIDString()), LifecycleKind.REBOOTED)
            self._loop.call_soon_threadsafe(self.queue.put_lifecycle, translated)
        except (libvirt.libvirtError, RuntimeError):
            return

    # -- the host's own facts; blocking, run with blocking()

    def host_info(self) -> HostInfo:
        conn = self.conn
        info = conn.getInfo()
        total_mib, free_mib = _memory_mib(conn, int(info[1]))
        if self._graphics is None:
            self._graphics = self._read_graphics()
        return HostInfo(
            hostname=str(conn.getHostname()),
            cpus=int(info[2]),
            memory_total_mib=total_mib,
            memory_free_mib=free_mib,
            domains_active=int(conn.numOfDomains()),
            graphics=self._graphics,
        )

    def _read_graphics(self) -> frozenset[str]:
        """The display types of the hypervisor's domain capabilities; none if it has none."""
        for virt_type in (None, "qemu"):
            try:
                caps = ET.fromstring(self.conn.getDomainCapabilities(None, None, None, virt_type))
            except libvirt.libvirtError:
                continue
            values = caps.findall("./devices/graphics[@supported='yes']/enum[@name='type']/value")
            return frozenset((v.text or "").strip() for v in values)
        return frozenset()

    async def close(self) -> None:
        self._closed = True
        if self._reconnecting is not None:
            self._reconnecting.cancel()
            await asyncio.gather(self._reconnecting, return_exceptions=True)
        conn, self._conn = self._conn, None
        callback_ids, self._callback_ids = self._callback_ids, []
        if conn is None:
            return
        try:
            await blocking(conn.unregisterCloseCallback)
            for callback_id in callback_ids:
                await blocking(functools.partial(conn.domainEventDeregisterAny, callback_id))
        finally:
            await blocking(conn.close)


def _memory_mib(conn: libvirt.virConnect, numa_total_mib: int) -> tuple[int, int]:
    """The host's memory, total and free to give to guests, in MiB.

    The whole host's figures (/proc/meminfo through libvirt), not the NUMA
    cells' that getInfo and getFreeMemory add up: on some virtual machines
    the cells hold only part of the memory. Page cache and buffers count as
    free, as the kernel gives them up when a guest needs the memory. Drivers
    without node memory statistics (the test driver) fall back to the cells.
    """
    try:
        stats = conn.getMemoryStats(libvirt.VIR_NODE_MEMORY_STATS_ALL_CELLS)
    except libvirt.libvirtError:
        free = int(conn.getFreeMemory()) // (1024 * 1024)
        return numa_total_mib, free
    free_kib = sum(int(stats.get(key, 0)) for key in ("free", "buffers", "cached"))
    return int(stats["total"]) // 1024, free_kib // 1024


def _close_quietly(conn: Any) -> None:
    """Closes a connection that may be dead already."""
    with contextlib.suppress(libvirt.libvirtError):
        conn.unregisterCloseCallback()
    with contextlib.suppress(libvirt.libvirtError):
        conn.close()
