"""The Hypervisor interface on libvirt-python.

- libvirt's own event loop runs on one daemon thread per process, registered
  before any connection opens. (libvirtaio is not used: libvirt calls its
  event hooks from whichever thread makes an API call, and libvirtaio then
  touches the asyncio loop from asyncio.to_thread's workers, which asyncio
  does not allow — events were lost under asyncio's debug mode.)
- The lifecycle and reboot callbacks only translate the event to a plain
  value and hand it to the asyncio loop, where it goes into a bounded queue;
  when the queue is full the event is dropped and the consumer later gets
  EventsLost.
- Blocking calls run in asyncio.to_thread; libvirt errors become hostd.errors
  here, once (hostd.libvirt_translate holds the tables).
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
from collections.abc import AsyncIterator, Callable
from typing import Any, TypeVar

import libvirt

from hostd import domxml, migration_xml
from hostd.errors import DomainAlreadyExists, HypervisorUnavailable, PeerUnavailable
from hostd.hypervisor import (
    ConnectionLost,
    DomainAction,
    DomainInfo,
    DomainState,
    DomainStats,
    EventsLost,
    HostInfo,
    HypervisorEvent,
    JobProgress,
    LifecycleEvent,
    LifecycleKind,
    MigrationTarget,
    Reconnected,
)
from hostd.libvirt_translate import (
    STATES,
    STATS_GROUPS,
    is_saving,
    is_starting,
    parse_job,
    parse_stats,
    stop_reason,
    translate_error,
    translate_lifecycle,
)
from virtplane_common.errors import VirtplaneError

log = logging.getLogger(__name__)

T = TypeVar("T")

_ACTIONS: dict[DomainAction, Callable[[Any], object]] = {
    # shutdown and reboot take the hypervisor's default method: for QEMU
    # without its own guest agent configured, the ACPI power button.
    DomainAction.SHUTDOWN: lambda dom: dom.shutdown(),
    DomainAction.REBOOT: lambda dom: dom.reboot(0),
    DomainAction.RESET: lambda dom: dom.reset(0),
    DomainAction.PAUSE: lambda dom: dom.suspend(),
    DomainAction.RESUME: lambda dom: dom.resume(),
    DomainAction.DESTROY: lambda dom: dom.destroy(),
    DomainAction.UNDEFINE: lambda dom: dom.undefine(),
    DomainAction.ABORT_JOB: lambda dom: dom.abortJob(),
}
_KEEP_COMPLETED = (
    libvirt.VIR_DOMAIN_JOB_STATS_COMPLETED | libvirt.VIR_DOMAIN_JOB_STATS_KEEP_COMPLETED
)
"""A completed job's statistics, left for the next reader (reading them removes them)."""
_STATS_TRIES = 30
_GONE = (libvirt.VIR_ERR_NO_DOMAIN_METADATA, libvirt.VIR_ERR_NO_DOMAIN)
_CLOSE_REASONS = {
    libvirt.VIR_CONNECT_CLOSE_REASON_ERROR: "a connection error",
    libvirt.VIR_CONNECT_CLOSE_REASON_EOF: "libvirtd closed the connection",
    libvirt.VIR_CONNECT_CLOSE_REASON_KEEPALIVE: "libvirtd stopped answering",
}
RECONNECT_FIRST_SECONDS = 0.2


async def _blocking(call: Callable[[], T], uuid: str = "") -> T:
    """Runs a blocking libvirt call off the event loop, translating its errors."""
    try:
        return await asyncio.to_thread(call)
    except libvirt.libvirtError as exc:
        raise translate_error(exc, uuid) from exc


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


class LibvirtHypervisor:
    """A libvirt connection, kept up. Create with ``await LibvirtHypervisor.open(uri)``."""

    def __init__(self, uri: str, queue_size: int, reconnect_max_seconds: float) -> None:
        self._conn: Any = None
        self.uri = uri
        self._loop = asyncio.get_running_loop()
        # Unbounded underneath: the bound applies to lifecycle events only
        # (_enqueue); ConnectionLost and Reconnected always get in.
        self._queue: asyncio.Queue[HypervisorEvent] = asyncio.Queue()
        self._queue_size = queue_size
        self._dropped = 0
        self._callback_ids: list[int] = []
        self._graphics: frozenset[str] | None = None
        self._reconnect_max = reconnect_max_seconds
        self._reconnecting: asyncio.Task[None] | None = None
        self._lost_reason = ""
        self._closed = False

    @classmethod
    async def open(
        cls, uri: str, *, event_queue_size: int = 1024, reconnect_max_seconds: float = 5.0
    ) -> LibvirtHypervisor:
        """Connects; fails (HypervisorUnavailable) if libvirtd cannot be reached now."""
        _EVENT_LOOP.ensure_running()  # must precede the connection
        hypervisor = cls(uri, event_queue_size, reconnect_max_seconds)
        await hypervisor._connect()
        log.info("connected to libvirt at %s", uri)
        return hypervisor

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
        conn = await _blocking(lambda: libvirt.open(self.uri))
        callback_ids: list[int] = []
        try:
            for event_id, callback in (
                (libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE, self._on_lifecycle),
                (libvirt.VIR_DOMAIN_EVENT_ID_REBOOT, self._on_reboot),
            ):
                register = functools.partial(
                    conn.domainEventRegisterAny, None, event_id, callback, None
                )
                callback_ids.append(int(await _blocking(register)))
            # No keepalive probes of hostd's own: on a busy host libvirtd is slow to
            # answer at times, and a probe would take it for gone.
            await _blocking(functools.partial(conn.registerCloseCallback, self._on_close, None))
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
        self._queue.put_nowait(ConnectionLost(self._lost_reason))
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
            self._queue.put_nowait(Reconnected(took))
            return

    # -- events: on libvirt's event thread, translate, hand over, return.

    def _on_lifecycle(self, _conn: Any, dom: Any, event: int, detail: int, _opaque: Any) -> None:
        try:
            translated = translate_lifecycle(str(dom.UUIDString()), event, detail)
            self._loop.call_soon_threadsafe(self._enqueue, translated)
        except (libvirt.libvirtError, RuntimeError):  # RuntimeError: the loop is closed
            return

    def _on_reboot(self, _conn: Any, dom: Any, _opaque: Any) -> None:
        try:
            translated = LifecycleEvent(str(dom.UUIDString()), LifecycleKind.REBOOTED)
            self._loop.call_soon_threadsafe(self._enqueue, translated)
        except (libvirt.libvirtError, RuntimeError):
            return

    def _enqueue(self, event: LifecycleEvent) -> None:
        if self._queue.qsize() >= self._queue_size:
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

    # -- running and stopping domains

    async def start(self, xml: str, *, persistent: bool, paused: bool) -> str:
        flags = libvirt.VIR_DOMAIN_START_PAUSED if paused else 0
        if not persistent:
            return await _blocking(lambda: str(self.conn.createXML(xml, flags).UUIDString()))
        return await _blocking(lambda: self._define_and_start(xml, flags))

    def _define_and_start(self, xml: str, flags: int) -> str:
        uuid = ET.fromstring(xml).findtext("uuid", "")
        conn = self.conn
        try:
            conn.lookupByUUIDString(uuid)
        except libvirt.libvirtError as exc:
            if exc.get_error_code() != libvirt.VIR_ERR_NO_DOMAIN:
                raise
        else:  # defining it again would change a domain that exists
            raise DomainAlreadyExists(f"a domain with UUID {uuid} exists already")
        dom = conn.defineXML(xml)
        try:
            dom.createWithFlags(flags)
        except libvirt.libvirtError:
            try:
                dom.undefine()
            except libvirt.libvirtError:
                log.warning("domain %s: cannot undefine it after its failed start", uuid)
            raise
        return str(dom.UUIDString())

    async def act(self, uuid: str, action: DomainAction) -> None:
        do = _ACTIONS[action]
        await _blocking(lambda: do(self.conn.lookupByUUIDString(uuid)), uuid)

    async def save(self, uuid: str, path: str) -> None:
        await _blocking(lambda: self.conn.lookupByUUIDString(uuid).save(path), uuid)

    async def restore(self, path: str, *, paused: bool, persistent: bool) -> str:
        flags = libvirt.VIR_DOMAIN_SAVE_PAUSED if paused else 0

        def run() -> str:
            conn = self.conn
            uuid = ET.fromstring(conn.saveImageGetXMLDesc(path, 0)).findtext("uuid", "")
            conn.restoreFlags(path, None, flags)
            if persistent:
                dom = conn.lookupByUUIDString(uuid)
                conn.defineXML(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE))
            return uuid

        return await _blocking(run)

    async def read_saved(self, path: str) -> domxml.HostdMetadata | None:
        try:
            text = await _blocking(lambda: str(self.conn.saveImageGetXMLDesc(path, 0)))
        except VirtplaneError as exc:  # incomplete ("mismatched header", "incomplete"), absent
            log.info("saved image %s is not usable: %s", path, exc)
            return None
        return domxml.metadata_in_domain(text)

    # -- migrating

    async def migrate(self, uuid: str, target: MigrationTarget) -> JobProgress:
        flags = libvirt.VIR_MIGRATE_LIVE
        if target.persistent:
            flags |= libvirt.VIR_MIGRATE_PERSIST_DEST | libvirt.VIR_MIGRATE_UNDEFINE_SOURCE

        def run() -> JobProgress:
            dom = self.conn.lookupByUUIDString(uuid)
            xml = migration_xml.retarget(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_MIGRATABLE), target)
            params: dict[str, object] = {
                libvirt.VIR_MIGRATE_PARAM_URI: target.migration_uri,
                libvirt.VIR_MIGRATE_PARAM_DEST_XML: xml,
            }
            if target.max_bandwidth_mib:
                params[libvirt.VIR_MIGRATE_PARAM_BANDWIDTH] = target.max_bandwidth_mib
            try:
                destination = libvirt.open(target.hypervisor_uri)
            except libvirt.libvirtError as exc:
                raise PeerUnavailable(
                    f"the destination's hypervisor at {target.hypervisor_uri} cannot be "
                    f"reached: {exc.get_error_message() or exc}"
                ) from exc
            try:
                landed = dom.migrate3(destination, params, flags)
                # libvirt files the completed job's statistics where the domain now
                # runs, and sometimes only just after migrate3 returned.
                for _ in range(_STATS_TRIES):
                    stats = landed.jobStats(_KEEP_COMPLETED)
                    if (
                        stats.get("type", libvirt.VIR_DOMAIN_JOB_NONE)
                        != libvirt.VIR_DOMAIN_JOB_NONE
                    ):
                        break
                    time.sleep(0.1)
            finally:
                destination.close()
            return parse_job(stats)

        return await _blocking(run, uuid)

    async def job_progress(self, uuid: str, *, completed: bool = False) -> JobProgress | None:
        flags = _KEEP_COMPLETED if completed else 0

        def read() -> JobProgress | None:
            stats = self.conn.lookupByUUIDString(uuid).jobStats(flags)
            if stats.get("type", libvirt.VIR_DOMAIN_JOB_NONE) == libvirt.VIR_DOMAIN_JOB_NONE:
                return None
            return parse_job(stats)

        return await _blocking(read, uuid)

    # -- looking

    async def domain_xml(self, uuid: str) -> str:
        return await _blocking(lambda: str(self.conn.lookupByUUIDString(uuid).XMLDesc(0)), uuid)

    async def domain_stats(self, uuid: str) -> DomainStats:
        def read() -> DomainStats:
            conn = self.conn
            dom = conn.lookupByUUIDString(uuid)
            ((_dom, records),) = conn.domainListGetStats([dom], STATS_GROUPS, 0)
            return parse_stats(records)

        return await _blocking(read, uuid)

    async def list_domains(self) -> list[DomainInfo]:
        return await _blocking(self._list_domains)

    def _list_domains(self) -> list[DomainInfo]:
        found: list[DomainInfo] = []
        for dom in self.conn.listAllDomains(0):
            try:
                code, reason = dom.state()
                metadata = self._metadata(dom)
                found.append(
                    DomainInfo(
                        uuid=str(dom.UUIDString()),
                        name=str(dom.name()),
                        state=STATES.get(code, DomainState.OTHER),
                        active=bool(dom.isActive()),
                        persistent=bool(dom.isPersistent()),
                        metadata=metadata,
                        saving=is_saving(code, reason),
                        starting=is_starting(code, reason),
                        stop_reason=stop_reason(code, reason),
                    )
                )
            except libvirt.libvirtError as exc:
                if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                    continue  # gone since the listing
                raise
        return found

    @staticmethod
    def _metadata(dom: Any) -> domxml.HostdMetadata | None:
        try:
            text = dom.metadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, domxml.METADATA_NAMESPACE)
        except libvirt.libvirtError as exc:
            if exc.get_error_code() in _GONE:
                return None  # not ours
            raise
        return domxml.parse_metadata(str(text))

    async def host_info(self) -> HostInfo:
        def read() -> HostInfo:
            conn = self.conn
            info = conn.getInfo()
            total_mib, free_mib = self._memory_mib(conn, int(info[1]))
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

        return await _blocking(read)

    @staticmethod
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
            await _blocking(conn.unregisterCloseCallback)
            for callback_id in callback_ids:
                await _blocking(functools.partial(conn.domainEventDeregisterAny, callback_id))
        finally:
            await _blocking(conn.close)


def _close_quietly(conn: Any) -> None:
    """Closes a connection that may be dead already."""
    with contextlib.suppress(libvirt.libvirtError):
        conn.unregisterCloseCallback()
    with contextlib.suppress(libvirt.libvirtError):
        conn.close()
