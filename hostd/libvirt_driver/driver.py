"""LibvirtHypervisor: the Hypervisor interface on libvirt-python.

The connection and its events are LibvirtHost's (hostd.libvirt_driver.host),
each domain's operations LibvirtGuest's (hostd.libvirt_driver.guest); this
class starts and restores domains, lists them, and answers each call of the
interface by running the blocking libvirt work off the event loop, where
libvirt's errors become hostd's.
"""

from __future__ import annotations

import logging
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator, Callable
from typing import TypeVar

import libvirt

from hostd import domxml
from hostd.errors import DomainAlreadyExists
from hostd.hypervisor import (
    DomainAction,
    DomainInfo,
    DomainStats,
    HostInfo,
    HypervisorEvent,
    JobProgress,
    MigrationTarget,
)
from hostd.libvirt_driver.calls import NO_TIMEOUT, blocking
from hostd.libvirt_driver.guest import LibvirtGuest
from hostd.libvirt_driver.host import LibvirtHost
from virtplane_common.errors import VirtplaneError

log = logging.getLogger(__name__)
T = TypeVar("T")


class LibvirtHypervisor:
    """A libvirt connection, kept up. Create with ``await LibvirtHypervisor.open(uri)``."""

    def __init__(self, host: LibvirtHost) -> None:
        self._host = host

    @classmethod
    async def open(
        cls, uri: str, *, event_queue_size: int = 1024, reconnect_max_seconds: float = 5.0
    ) -> LibvirtHypervisor:
        """Connects; fails (HypervisorUnavailable) if libvirtd cannot be reached now."""
        host = await LibvirtHost.open(
            uri, event_queue_size=event_queue_size, reconnect_max_seconds=reconnect_max_seconds
        )
        return cls(host)

    @property
    def uri(self) -> str:
        return self._host.uri

    @property
    def connected(self) -> bool:
        return self._host.connected

    def _guest(self, uuid: str) -> LibvirtGuest:
        return LibvirtGuest.lookup(self._host.conn, uuid)

    # -- running and stopping domains

    async def start(self, xml: str, *, persistent: bool, paused: bool) -> str:
        flags = libvirt.VIR_DOMAIN_START_PAUSED if paused else 0
        if not persistent:
            return await blocking(
                lambda: str(self._host.conn.createXML(xml, flags).UUIDString()),
                operation="start",
            )
        return await blocking(lambda: self._define_and_start(xml, flags), operation="start")

    def _define_and_start(self, xml: str, flags: int) -> str:
        uuid = ET.fromstring(xml).findtext("uuid", "")
        conn = self._host.conn
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
        await blocking(lambda: self._guest(uuid).act(action), uuid, operation=action.name.lower())

    async def save(self, uuid: str, path: str) -> None:
        await blocking(
            lambda: self._guest(uuid).save(path), uuid, operation="save", timed=NO_TIMEOUT
        )

    async def restore(self, path: str, *, paused: bool, persistent: bool) -> str:
        flags = libvirt.VIR_DOMAIN_SAVE_PAUSED if paused else 0

        def run() -> str:
            conn = self._host.conn
            uuid = ET.fromstring(conn.saveImageGetXMLDesc(path, 0)).findtext("uuid", "")
            conn.restoreFlags(path, None, flags)
            if persistent:
                LibvirtGuest.lookup(conn, uuid).define(conn)
            return uuid

        return await blocking(run, operation="restore", timed=NO_TIMEOUT)

    async def read_saved(self, path: str) -> domxml.HostdMetadata | None:
        try:
            text = await blocking(
                lambda: str(self._host.conn.saveImageGetXMLDesc(path, 0)),
                operation="read_saved",
            )
        except VirtplaneError as exc:  # incomplete ("mismatched header", "incomplete"), absent
            log.info("saved image %s is not usable: %s", path, exc)
            return None
        return domxml.metadata_in_domain(text)

    # -- migrating

    async def migrate(self, uuid: str, target: MigrationTarget) -> JobProgress:
        return await blocking(
            lambda: self._on_own_connection(uuid, lambda g: g.migrate(target)),
            uuid,
            operation="migrate",
            timed=NO_TIMEOUT,
        )

    def _on_own_connection(self, uuid: str, act: Callable[[LibvirtGuest], T]) -> T:
        """act on the domain through a connection of its own, for a call that
        lasts as long as its job: on the shared connection, the other calls
        (the job's progress among them) were answered only every ~5 s while
        migrate3 waited on it."""
        conn = libvirt.open(self._host.uri)
        try:
            return act(LibvirtGuest.lookup(conn, uuid))
        finally:
            conn.close()

    async def job_progress(self, uuid: str, *, completed: bool = False) -> JobProgress | None:
        return await blocking(
            lambda: self._guest(uuid).job_progress(completed=completed),
            uuid,
            operation="job_progress",
        )

    # -- looking

    async def domain_xml(self, uuid: str) -> str:
        return await blocking(lambda: self._guest(uuid).xml(), uuid, operation="domain_xml")

    async def domain_stats(self, uuid: str) -> DomainStats:
        def read() -> DomainStats:
            conn = self._host.conn
            return LibvirtGuest.lookup(conn, uuid).stats(conn)

        return await blocking(read, uuid, operation="domain_stats")

    async def list_domains(self) -> list[DomainInfo]:
        return await blocking(self._list_domains, operation="list_domains")

    def _list_domains(self) -> list[DomainInfo]:
        found: list[DomainInfo] = []
        for dom in self._host.conn.listAllDomains(0):
            try:
                found.append(LibvirtGuest(dom).info())
            except libvirt.libvirtError as exc:
                if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                    continue  # gone since the listing
                raise
        return found

    async def host_info(self) -> HostInfo:
        return await blocking(self._host.host_info, operation="host_info")

    def events(self) -> AsyncIterator[HypervisorEvent]:
        return self._host.queue.events()

    async def close(self) -> None:
        await self._host.close()
