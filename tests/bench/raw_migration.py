"""The raw baseline of a live migration: a guest hostd would run, moved
between two libvirtd with libvirt-python alone, as hostd moves one.

The domain is the one hostd builds for the spec (hostd.builder, its
defaults filled in as hostd's create path does); it runs outside any hostd's
state folder, so the hostds on the same libvirtd leave it alone (external).
A move is hostd.libvirt_driver.guest.LibvirtGuest.migrate without hostd:
the same flags (VIR_MIGRATE_LIVE, and VIR_MIGRATE_TLS with
VIR_MIGRATE_PARAM_TLS_DESTINATION the destination host's DNS name; the
domain is transient, as hostd starts the controller's VMs), the same
destination XML (hostd.migration_xml.retarget to the destination's paths)
and the downtime read as hostd reads it: the completed job's statistics on
the destination ('downtime', ms), kept for the next reader.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
import uuid
from dataclasses import dataclass

import libvirt
from virtplane.v1 import host_agent_service_pb2 as agent_pb2

from hostd import builder, convert, domxml
from hostd.defaults import with_defaults
from hostd.hypervisor import MigrationTarget
from hostd.layout import StateLayout
from hostd.migration_xml import retarget
from hostd.virt_type import detect_virt_type
from tests.bench.start_path import LibvirtEventLoop
from tests.support.stack import free_port
from virtplane_client import VmSpec
from virtplane_client.convert import spec_message
from virtplane_common.tls.names import host_dns_name

BOOT_SECONDS = 240.0
"""How long the guest may take to speak on its channel (TCG on a loaded machine)."""
EVENT_SECONDS = 30.0
"""How long the destination's RESUMED event may lag migrate3's return."""
STATS_TRIES = 30
"""Reads of the completed job's statistics, 0.1 s apart, as hostd makes them."""
KEEP_COMPLETED = (
    libvirt.VIR_DOMAIN_JOB_STATS_COMPLETED | libvirt.VIR_DOMAIN_JOB_STATS_KEEP_COMPLETED
)


@dataclass(frozen=True)
class RawHost:
    """A libvirtd, the host id its QEMU's TLS pair names, and a folder of its own."""

    uri: str
    host_id: str
    layout: StateLayout


@dataclass(frozen=True)
class RawMove:
    seconds: float
    """migrate3 called → returned."""
    resumed_s: float
    """migrate3 called → the domain RESUMED (MIGRATED) on the destination, as
    a libvirt client of it sees the event: the moment hostd there takes the
    VM over as RUNNING."""
    downtime_ms: int
    """libvirt's 'downtime' of the completed job, read on the destination."""


def _completed_downtime(dom: libvirt.virDomain) -> int:
    """The completed job's downtime, ms (libvirt files it shortly after the
    domain resumes, sometimes only after migrate3 returned)."""
    for _ in range(STATS_TRIES):
        stats = dom.jobStats(KEEP_COMPLETED)
        if stats.get("type", libvirt.VIR_DOMAIN_JOB_NONE) != libvirt.VIR_DOMAIN_JOB_NONE:
            downtime = stats.get("downtime", 0)
            return downtime if isinstance(downtime, int) else 0
        time.sleep(0.1)
    raise RuntimeError(f"libvirt filed no statistics of the migration of {dom.UUIDString()}")


class RawGuest:
    """One guest booted on hosts[0] and moved back and forth between the two."""

    def __init__(self, spec: VmSpec, hosts: tuple[RawHost, RawHost]) -> None:
        self.vm_id = str(uuid.uuid4())
        self._hosts = hosts
        self._spec = spec
        LibvirtEventLoop.ensure()  # before the connections: their events need it
        self._conns = [libvirt.open(host.uri) for host in hosts]
        self._resumed = threading.Event()
        self._resumed_at = 0.0
        self._callbacks = [
            conn.domainEventRegisterAny(
                None, libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE, self._on_event, None
            )
            for conn in self._conns
        ]
        self.here = 0

    def _on_event(
        self, _c: object, dom: libvirt.virDomain, event: int, detail: int, _o: object
    ) -> None:
        """Stamps the domain resuming where it landed (libvirt's event thread)."""
        landed = (libvirt.VIR_DOMAIN_EVENT_RESUMED, libvirt.VIR_DOMAIN_EVENT_RESUMED_MIGRATED)
        if dom.UUIDString() == self.vm_id and (event, detail) == landed:
            self._resumed_at = time.perf_counter()
            self._resumed.set()

    def boot(self) -> None:
        """Starts the domain on the first host; returns once the guest speaks."""
        layout = self._hosts[0].layout
        layout.prepare()
        self._hosts[1].layout.prepare()
        message = spec_message(self._spec)
        config = agent_pb2.VmConfig(
            vm_id=self.vm_id, name=f"bench-rawmig-{self.vm_id[:8]}", spec=message
        )
        filled = with_defaults(convert.config_from_proto(config))
        xml = domxml.to_xml(builder.build_domain(filled, detect_virt_type("auto"), layout))
        self._conns[0].createXML(xml, 0)
        with socket.socket(socket.AF_UNIX) as sock:
            sock.connect(str(layout.channel_socket(self.vm_id)))
            sock.settimeout(BOOT_SECONDS)
            sock.recv(1)

    def move(self) -> RawMove:
        """Migrates the guest to the other host, as hostd would."""
        there = 1 - self.here
        host = self._hosts[there]
        target = MigrationTarget(
            hypervisor_uri=host.uri,
            migration_uri=f"tcp://127.0.0.1:{free_port()}",
            channel_socket=str(host.layout.channel_socket(self.vm_id)),
            console_log=str(host.layout.console_log(self.vm_id)),
            state_dir=str(host.layout.root),
            tls_destination=host_dns_name(host.host_id),
        )
        dom = self._conns[self.here].lookupByUUIDString(self.vm_id)
        params = {
            libvirt.VIR_MIGRATE_PARAM_URI: target.migration_uri,
            libvirt.VIR_MIGRATE_PARAM_DEST_XML: retarget(
                dom.XMLDesc(libvirt.VIR_DOMAIN_XML_MIGRATABLE), target
            ),
            libvirt.VIR_MIGRATE_PARAM_TLS_DESTINATION: target.tls_destination,
        }
        flags = libvirt.VIR_MIGRATE_LIVE | libvirt.VIR_MIGRATE_TLS
        self._resumed.clear()
        t0 = time.perf_counter()
        landed = dom.migrate3(self._conns[there], params, flags)
        seconds = time.perf_counter() - t0
        self.here = there
        if not self._resumed.wait(EVENT_SECONDS):
            raise RuntimeError(f"no RESUMED (MIGRATED) event of {self.vm_id} on {host.uri}")
        return RawMove(seconds, self._resumed_at - t0, _completed_downtime(landed))

    def close(self) -> None:
        """Destroys the domain wherever it runs; closes the connections."""
        with contextlib.suppress(libvirt.libvirtError):
            self._conns[self.here].lookupByUUIDString(self.vm_id).destroy()
        for conn, callback in zip(self._conns, self._callbacks, strict=True):
            conn.domainEventDeregisterAny(callback)
            conn.close()
