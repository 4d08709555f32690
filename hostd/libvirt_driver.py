"""The Hypervisor interface on libvirt-python: the only module that imports libvirt.

- libvirt's own event loop runs on one daemon thread per process, registered
  before any connection opens. (libvirtaio is not used: libvirt calls its
  event hooks from whichever thread makes an API call, and libvirtaio then
  touches the asyncio loop from asyncio.to_thread's workers, which asyncio
  does not allow — events were lost under asyncio's debug mode.)
- The lifecycle callback only translates the event to a plain value and hands
  it to the asyncio loop, where it goes into a bounded queue; when the queue
  is full the event is dropped and the consumer later gets EventsLost.
- Blocking calls run in asyncio.to_thread; libvirt errors become hostd.errors
  here, once.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import AsyncIterator, Callable
from typing import Any, TypeVar

import libvirt
from virtplane.errors import VirtplaneError

from hostd import domxml
from hostd.errors import (
    DomainAlreadyExists,
    DomainNotFound,
    DomainStateConflict,
    HypervisorError,
    HypervisorUnavailable,
)
from hostd.hypervisor import (
    DomainState,
    EventsLost,
    HostCapacity,
    HypervisorEvent,
    LifecycleEvent,
    LifecycleKind,
    OwnedDomain,
    StopReason,
)

log = logging.getLogger(__name__)

T = TypeVar("T")

_KINDS: dict[int, LifecycleKind] = {
    libvirt.VIR_DOMAIN_EVENT_STARTED: LifecycleKind.STARTED,
    libvirt.VIR_DOMAIN_EVENT_RESUMED: LifecycleKind.RESUMED,
    libvirt.VIR_DOMAIN_EVENT_SUSPENDED: LifecycleKind.SUSPENDED,
    libvirt.VIR_DOMAIN_EVENT_SHUTDOWN: LifecycleKind.SHUTDOWN,
    libvirt.VIR_DOMAIN_EVENT_STOPPED: LifecycleKind.STOPPED,
    libvirt.VIR_DOMAIN_EVENT_CRASHED: LifecycleKind.CRASHED,
}
_STOP_REASONS: dict[int, StopReason] = {
    libvirt.VIR_DOMAIN_EVENT_STOPPED_SHUTDOWN: StopReason.SHUTDOWN,
    libvirt.VIR_DOMAIN_EVENT_STOPPED_DESTROYED: StopReason.DESTROYED,
    libvirt.VIR_DOMAIN_EVENT_STOPPED_CRASHED: StopReason.CRASHED,
    libvirt.VIR_DOMAIN_EVENT_STOPPED_MIGRATED: StopReason.MIGRATED,
    libvirt.VIR_DOMAIN_EVENT_STOPPED_SAVED: StopReason.SAVED,
    libvirt.VIR_DOMAIN_EVENT_STOPPED_FAILED: StopReason.FAILED,
}
_STATES: dict[int, DomainState] = {
    libvirt.VIR_DOMAIN_RUNNING: DomainState.RUNNING,
    libvirt.VIR_DOMAIN_PAUSED: DomainState.PAUSED,
    libvirt.VIR_DOMAIN_SHUTDOWN: DomainState.SHUTTING_DOWN,
    libvirt.VIR_DOMAIN_SHUTOFF: DomainState.SHUT_OFF,
    libvirt.VIR_DOMAIN_CRASHED: DomainState.CRASHED,
}
_CONNECTION_CODES = frozenset(
    {
        libvirt.VIR_ERR_NO_CONNECT,
        libvirt.VIR_ERR_INVALID_CONN,
        libvirt.VIR_ERR_AUTH_FAILED,
        libvirt.VIR_ERR_AUTH_CANCELLED,
        libvirt.VIR_ERR_AUTH_UNAVAILABLE,
    }
)


def translate_lifecycle(uuid: str, event: int, detail: int) -> LifecycleEvent:
    """A libvirt lifecycle event (type and detail) as a hypervisor value."""
    kind = _KINDS.get(event, LifecycleKind.OTHER)
    reason: StopReason | None = None
    if kind is LifecycleKind.STOPPED:
        reason = _STOP_REASONS.get(detail, StopReason.OTHER)
    elif kind is LifecycleKind.CRASHED:
        reason = StopReason.CRASHED
    return LifecycleEvent(uuid=uuid, kind=kind, reason=reason)


def translate_error(exc: libvirt.libvirtError, uuid: str = "") -> VirtplaneError:
    """The hostd error for a libvirt error; the one place libvirt's codes are read."""
    code = exc.get_error_code()
    message = str(exc.get_error_message() or exc)
    if code == libvirt.VIR_ERR_NO_DOMAIN:
        return DomainNotFound(uuid or message)
    if code == libvirt.VIR_ERR_OPERATION_INVALID:
        return DomainStateConflict(message)
    if code == libvirt.VIR_ERR_DOM_EXIST:
        return DomainAlreadyExists(message)
    if code in _CONNECTION_CODES or exc.get_error_domain() == libvirt.VIR_FROM_RPC:
        return HypervisorUnavailable(f"libvirt: {message}")
    return HypervisorError(message)


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
    """One libvirt connection. Create with ``await LibvirtHypervisor.open(uri)``."""

    def __init__(self, conn: Any, uri: str, queue_size: int) -> None:
        self._conn = conn
        self.uri = uri
        self._loop = asyncio.get_running_loop()
        self._queue: asyncio.Queue[LifecycleEvent] = asyncio.Queue(maxsize=queue_size)
        self._dropped = 0
        self._callback_id: int | None = None

    @classmethod
    async def open(cls, uri: str, *, event_queue_size: int = 1024) -> LibvirtHypervisor:
        _EVENT_LOOP.ensure_running()  # must precede the connection
        conn = await _blocking(lambda: libvirt.open(uri))
        hypervisor = cls(conn, uri, event_queue_size)
        try:
            hypervisor._callback_id = await _blocking(
                lambda: int(
                    conn.domainEventRegisterAny(
                        None,
                        libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE,
                        hypervisor._on_lifecycle,
                        None,
                    )
                )
            )
        except VirtplaneError:
            await _blocking(conn.close)
            raise
        log.info("connected to libvirt at %s", uri)
        return hypervisor

    def _on_lifecycle(self, _conn: Any, dom: Any, event: int, detail: int, _opaque: Any) -> None:
        # On libvirt's event thread: translate, hand over, return.
        try:
            translated = translate_lifecycle(str(dom.UUIDString()), event, detail)
            self._loop.call_soon_threadsafe(self._enqueue, translated)
        except (libvirt.libvirtError, RuntimeError):  # RuntimeError: the loop is closed
            return

    def _enqueue(self, event: LifecycleEvent) -> None:
        try:
            self._queue.put_nowait(event)
        except asyncio.QueueFull:
            self._dropped += 1

    async def events(self) -> AsyncIterator[HypervisorEvent]:
        while True:
            yield await self._queue.get()
            if self._dropped and self._queue.empty():
                dropped, self._dropped = self._dropped, 0
                log.warning("%d libvirt events were dropped; asking for a resync", dropped)
                yield EventsLost(dropped)

    async def start_transient(self, xml: str) -> str:
        return await _blocking(lambda: str(self._conn.createXML(xml, 0).UUIDString()))

    async def destroy(self, uuid: str) -> None:
        await _blocking(lambda: self._conn.lookupByUUIDString(uuid).destroy(), uuid)

    async def list_owned(self) -> list[OwnedDomain]:
        return await _blocking(self._list_owned)

    def _list_owned(self) -> list[OwnedDomain]:
        owned: list[OwnedDomain] = []
        for dom in self._conn.listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_ACTIVE):
            try:
                text = dom.metadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, domxml.METADATA_NAMESPACE)
                code, _reason = dom.state()
            except libvirt.libvirtError as exc:
                gone = (libvirt.VIR_ERR_NO_DOMAIN_METADATA, libvirt.VIR_ERR_NO_DOMAIN)
                if exc.get_error_code() in gone:
                    continue  # not ours, or gone since the listing
                raise
            metadata = domxml.parse_metadata(str(text))
            if metadata is None:
                continue
            owned.append(
                OwnedDomain(
                    uuid=str(dom.UUIDString()),
                    name=str(dom.name()),
                    state=_STATES.get(code, DomainState.OTHER),
                    metadata=metadata,
                )
            )
        return owned

    async def capacity(self) -> HostCapacity:
        def read() -> HostCapacity:
            info = self._conn.getInfo()
            return HostCapacity(
                hostname=str(self._conn.getHostname()),
                cpus=int(info[2]),
                memory_total_mib=int(info[1]),
                memory_free_mib=int(self._conn.getFreeMemory()) // (1024 * 1024),
            )

        return await _blocking(read)

    async def close(self) -> None:
        callback_id, self._callback_id = self._callback_id, None
        try:
            if callback_id is not None:
                await _blocking(lambda: self._conn.domainEventDeregisterAny(callback_id))
        finally:
            await _blocking(self._conn.close)
