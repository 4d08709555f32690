"""One libvirt domain, wrapped (Nova's guest.py): what hostd does to it and reads of it.

Every method blocks on libvirt: the driver runs each call off the event loop
(host.blocking), where a libvirtError becomes hostd's error.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import libvirt

from hostd import domxml, migration_xml
from hostd.errors import PeerUnavailable
from hostd.hypervisor import (
    DomainAction,
    DomainInfo,
    DomainState,
    DomainStats,
    JobProgress,
    MigrationTarget,
)
from hostd.libvirt_driver.translate import (
    STATES,
    STATS_GROUPS,
    is_saving,
    is_starting,
    parse_job,
    parse_stats,
    stop_reason,
)

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
    DomainAction.START_POST_COPY: lambda dom: dom.migrateStartPostCopy(0),
}
_KEEP_COMPLETED = (
    libvirt.VIR_DOMAIN_JOB_STATS_COMPLETED | libvirt.VIR_DOMAIN_JOB_STATS_KEEP_COMPLETED
)
"""A completed job's statistics, left for the next reader (reading them removes them)."""
_STATS_TRIES = 30
_GONE = (libvirt.VIR_ERR_NO_DOMAIN_METADATA, libvirt.VIR_ERR_NO_DOMAIN)


class LibvirtGuest:
    """A wrapper over one virDomain."""

    def __init__(self, dom: Any) -> None:
        self._dom = dom

    @classmethod
    def lookup(cls, conn: Any, uuid: str) -> LibvirtGuest:
        """The domain of this UUID; libvirtError (VIR_ERR_NO_DOMAIN) when there is none."""
        return cls(conn.lookupByUUIDString(uuid))

    def act(self, action: DomainAction) -> None:
        _ACTIONS[action](self._dom)

    def save(self, path: str) -> None:
        self._dom.save(path)

    def xml(self, flags: int = 0) -> str:
        """The domain's XML; flags as virDomainGetXMLDesc's."""
        return str(self._dom.XMLDesc(flags))

    def define(self, conn: Any) -> None:
        """Defines the running domain as it runs: it becomes persistent."""
        conn.defineXML(self.xml(libvirt.VIR_DOMAIN_XML_INACTIVE))

    def stats(self, conn: Any) -> DomainStats:
        ((_dom, records),) = conn.domainListGetStats([self._dom], STATS_GROUPS, 0)
        return parse_stats(records)

    def job_progress(self, *, completed: bool) -> JobProgress | None:
        """The running job's statistics, or with completed the last completed job's."""
        stats = self._dom.jobStats(_KEEP_COMPLETED if completed else 0)
        if stats.get("type", libvirt.VIR_DOMAIN_JOB_NONE) == libvirt.VIR_DOMAIN_JOB_NONE:
            return None
        return parse_job(stats)

    def migrate(self, target: MigrationTarget) -> JobProgress:
        """Moves the domain live to target; returns the completed job's statistics."""
        flags = libvirt.VIR_MIGRATE_LIVE
        if target.persistent:
            flags |= libvirt.VIR_MIGRATE_PERSIST_DEST | libvirt.VIR_MIGRATE_UNDEFINE_SOURCE
        xml = migration_xml.retarget(self.xml(libvirt.VIR_DOMAIN_XML_MIGRATABLE), target)
        params: dict[str, object] = {
            libvirt.VIR_MIGRATE_PARAM_URI: target.migration_uri,
            libvirt.VIR_MIGRATE_PARAM_DEST_XML: xml,
        }
        if target.max_bandwidth_mib:
            params[libvirt.VIR_MIGRATE_PARAM_BANDWIDTH] = target.max_bandwidth_mib
        if target.tls_destination:
            flags |= libvirt.VIR_MIGRATE_TLS
            params[libvirt.VIR_MIGRATE_PARAM_TLS_DESTINATION] = target.tls_destination
        if target.auto_converge:
            flags |= libvirt.VIR_MIGRATE_AUTO_CONVERGE
        if target.post_copy:
            flags |= libvirt.VIR_MIGRATE_POSTCOPY
        if target.max_downtime_ms:
            # migrate3 has no parameter for it; QEMU keeps what is set before
            # the job for the job (its downtime-limit).
            self._dom.migrateSetMaxDowntime(target.max_downtime_ms, 0)
        try:
            destination = libvirt.open(target.hypervisor_uri)
        except libvirt.libvirtError as exc:
            raise PeerUnavailable(
                f"the destination's hypervisor at {target.hypervisor_uri} cannot be "
                f"reached: {exc.get_error_message() or exc}"
            ) from exc
        try:
            landed = self._dom.migrate3(destination, params, flags)
            # libvirt files the completed job's statistics where the domain now
            # runs, and sometimes only just after migrate3 returned.
            for _ in range(_STATS_TRIES):
                stats = landed.jobStats(_KEEP_COMPLETED)
                if stats.get("type", libvirt.VIR_DOMAIN_JOB_NONE) != libvirt.VIR_DOMAIN_JOB_NONE:
                    break
                time.sleep(0.1)
        finally:
            destination.close()
        return parse_job(stats)

    def info(self) -> DomainInfo:
        """The domain as list_domains() sees it."""
        dom = self._dom
        code, reason = dom.state()
        metadata = self.metadata()
        return DomainInfo(
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

    def metadata(self) -> domxml.HostdMetadata | None:
        """hostd's metadata in the domain; None for a domain hostd did not make."""
        try:
            text = self._dom.metadata(
                libvirt.VIR_DOMAIN_METADATA_ELEMENT, domxml.METADATA_NAMESPACE
            )
        except libvirt.libvirtError as exc:
            if exc.get_error_code() in _GONE:
                return None  # not ours
            raise
        return domxml.parse_metadata(str(text))
