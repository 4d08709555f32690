"""GuestReport sections built from facts, and what changed since the last one sent.

A section is "changed" when its deterministic serialisation differs from the
one last sent; the system section is compared with uptime zeroed, since
uptime always moves (heartbeats carry it). Applications are read again only
when the package database's stamp (path, mtime, size) changes.

Runs inside guests: standard library and protobuf only, Python >= 3.9.
"""

from __future__ import annotations

from pathlib import Path

from google.protobuf.message import Message
from virtplane.v1 import guest_channel_pb2 as gc

from guestd import facts, netfacts

SECTIONS = ("system", "os", "network", "applications")
"""The GuestReport fields that hold sections, in report order."""


def system_section(root: Path) -> gc.SystemSection:
    return gc.SystemSection(
        hostname=facts.hostname(root),
        uptime_seconds=facts.uptime_seconds(root),
        cpus=facts.cpu_count(),
    )


def os_section(root: Path) -> gc.OsSection:
    info = facts.os_info(root)
    return gc.OsSection(
        name=info.name,
        version=info.version,
        id=info.id,
        kernel_release=info.kernel_release,
        architecture=info.architecture,
    )


def network_section(root: Path) -> gc.NetworkSection:
    return gc.NetworkSection(
        interfaces=[
            gc.NetworkInterface(
                name=i.name,
                mac_address=i.mac_address,
                ipv4_addresses=i.ipv4_addresses,
                ipv6_addresses=i.ipv6_addresses,
            )
            for i in netfacts.interfaces(root)
        ]
    )


def applications_section(root: Path) -> gc.ApplicationsSection:
    return gc.ApplicationsSection(applications=facts.applications(root))


def comparable(section: Message) -> bytes:
    """The bytes two sections are compared by."""
    if isinstance(section, gc.SystemSection):
        section = gc.SystemSection(hostname=section.hostname, cpus=section.cpus)
    return section.SerializeToString(deterministic=True)


class Reporter:
    """Builds full and delta reports and remembers what was last sent."""

    def __init__(self, root: Path) -> None:
        self._root = root
        self._apps_stamp: tuple[str, int, int] | None = None
        self._apps: gc.ApplicationsSection | None = None
        self._sent: dict[str, bytes] = {}

    def full(self) -> gc.GuestReport:
        """A report with every section, freshly collected."""
        report = gc.GuestReport(full=True)
        for name, section in self._collect().items():
            getattr(report, name).CopyFrom(section)
        return report

    def delta(self) -> gc.GuestReport | None:
        """A report of the sections changed since last sent, None if none did."""
        report = gc.GuestReport(full=False)
        changed = False
        for name, section in self._collect().items():
            if self._sent.get(name) != comparable(section):
                getattr(report, name).CopyFrom(section)
                changed = True
        return report if changed else None

    def mark_sent(self, report: gc.GuestReport) -> None:
        """Records the sections of a report that went out."""
        for field, value in report.ListFields():
            if field.name in SECTIONS:
                self._sent[field.name] = comparable(value)

    def forget_sent(self) -> None:
        """Forgets what was sent, e.g. when a new host session starts."""
        self._sent.clear()

    def _collect(self) -> dict[str, Message]:
        return {
            "system": system_section(self._root),
            "os": os_section(self._root),
            "network": network_section(self._root),
            "applications": self._applications(),
        }

    def _applications(self) -> gc.ApplicationsSection:
        stamp = facts.package_db_stamp(self._root)
        if self._apps is None or stamp != self._apps_stamp:
            self._apps = applications_section(self._root)
            self._apps_stamp = stamp
        return self._apps
