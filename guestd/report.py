"""GuestReport sections built from facts, their content hashes, and what changed.

Content hash: every section carries ``content_hash``, the first 16 hex
digits of the SHA-256 of the section's deterministic protobuf serialisation,
taken with ``content_hash`` itself cleared and, in the system section,
``uptime_seconds`` zeroed (uptime always moves; heartbeats carry it). Equal
content gives an equal hash on any guest and any protobuf runtime, so the
host can tell a changed section from a resent one without comparing it.

Change detection: after a report went out, a section is sent again (in a
delta report) when its hash differs from the one last sent. The filesystems
section is the exception: sizes are already rounded to MiB, and a section
whose hash moved only because usage did counts as changed once some
filesystem's usage moved by at least 1 % of its size or 64 MiB since the
values last sent (guestd.filesystems), or when a filesystem came, went or
changed size. The applications list is read again only when the package
database's stamp (path, mtime, size) changes.

Runs inside guests: standard library and protobuf only, Python >= 3.9.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence, TypeVar, Union

from virtplane.v1 import guest_channel_pb2 as gc

from guestd import facts, filesystems, fqdn, netfacts, tz, users

SECTIONS = ("system", "os", "network", "applications", "users", "filesystems")
"""The GuestReport fields that hold sections, in report order."""
HASH_DIGITS = 16

Section = Union[
    gc.SystemSection,
    gc.OsSection,
    gc.NetworkSection,
    gc.ApplicationsSection,
    gc.UsersSection,
    gc.FilesystemsSection,
]
S = TypeVar("S", bound=Section)


@dataclass(frozen=True)
class Sources:
    """Where the facts that are not files under the root come from."""

    resolver: fqdn.ResolverLookup | None = None
    """Background DNS lookups for the FQDN; None: files only."""
    environ: Mapping[str, str] | None = None
    """Searched for TZ; None: ignored."""
    statvfs: filesystems.StatVfs = os.statvfs

    @classmethod
    def for_root(cls, root: Path) -> Sources:
        """The running system's resolver and environment, only when root is the real root."""
        if root.resolve() == Path("/").resolve():
            return cls(resolver=fqdn.ResolverLookup(), environ=os.environ)
        return cls()


def content_hash(section: Section) -> str:
    """The section's content hash (see the module docstring)."""
    clean = _copy(section)
    clean.ClearField("content_hash")
    if isinstance(clean, gc.SystemSection):
        clean.ClearField("uptime_seconds")
    return hashlib.sha256(clean.SerializeToString(deterministic=True)).hexdigest()[:HASH_DIGITS]


def _copy(section: S) -> S:
    clean = type(section)()
    clean.CopyFrom(section)  # type: ignore[arg-type]  # the same type; mypy sees the union
    return clean


def hashed(section: S) -> S:
    """The section with its content_hash set."""
    section.content_hash = content_hash(section)
    return section


def system_section(root: Path, sources: Sources | None = None) -> gc.SystemSection:
    sources = sources or Sources()
    hostname = facts.hostname(root)
    return gc.SystemSection(
        hostname=hostname,
        uptime_seconds=facts.uptime_seconds(root),
        cpus=facts.cpu_count(),
        fqdn=fqdn.fqdn(root, hostname, sources.resolver),
        timezone=tz.timezone(root, sources.environ),
        memory_total_kib=facts.memory_total_kib(root),
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


def applications_section(root: Path, patterns: Sequence[str] = ()) -> gc.ApplicationsSection:
    return gc.ApplicationsSection(applications=facts.applications(root, patterns))


def users_section(root: Path) -> gc.UsersSection:
    return gc.UsersSection(
        users=[
            gc.LoggedInUser(
                name=u.name,
                terminal=u.terminal,
                host=u.host,
                login_unix_seconds=u.login_unix_seconds,
            )
            for u in users.logged_in(root)
        ]
    )


def filesystems_section(root: Path, sources: Sources | None = None) -> gc.FilesystemsSection:
    statvfs = (sources or Sources()).statvfs
    return gc.FilesystemsSection(
        filesystems=[
            gc.Filesystem(
                mount_point=f.mount_point,
                type=f.type,
                device=f.device,
                total_bytes=f.total_bytes,
                used_bytes=f.used_bytes,
            )
            for f in filesystems.filesystems(root, statvfs)
        ]
    )


def _usages(section: gc.FilesystemsSection) -> list[filesystems.Usage]:
    return [
        filesystems.Usage(f.mount_point, f.type, f.device, f.total_bytes, f.used_bytes)
        for f in section.filesystems
    ]


def changed(sent: Section | None, current: Section) -> bool:
    """Whether current is to be sent, given the section last sent (see the module docstring)."""
    if sent is None:
        return True
    if sent.content_hash == current.content_hash:
        return False
    if isinstance(sent, gc.FilesystemsSection) and isinstance(current, gc.FilesystemsSection):
        return filesystems.significantly_changed(_usages(sent), _usages(current))
    return True


class Reporter:
    """Builds full and delta reports and remembers what was last sent."""

    def __init__(
        self,
        root: Path,
        applications_filter: Sequence[str] = (),
        sources: Sources | None = None,
    ) -> None:
        self._root = root
        self._filter = tuple(applications_filter)
        self._sources = sources or Sources()
        self._apps_stamp: tuple[str, int, int] | None = None
        self._apps: gc.ApplicationsSection | None = None
        self._sent: dict[str, Section] = {}

    def full(self) -> gc.GuestReport:
        """A report with every section, freshly collected."""
        report = gc.GuestReport(full=True)
        for name, section in self._collect().items():
            getattr(report, name).CopyFrom(section)
        return report

    def delta(self) -> gc.GuestReport | None:
        """A report of the sections changed since last sent, None if none did."""
        report = gc.GuestReport(full=False)
        any_changed = False
        for name, section in self._collect().items():
            if changed(self._sent.get(name), section):
                getattr(report, name).CopyFrom(section)
                any_changed = True
        return report if any_changed else None

    def mark_sent(self, report: gc.GuestReport) -> None:
        """Records the sections of a report that went out."""
        for field, value in report.ListFields():
            if field.name in SECTIONS:
                self._sent[field.name] = _copy(value)

    def forget_sent(self) -> None:
        """Forgets what was sent, e.g. when a new host session starts."""
        self._sent.clear()

    def _collect(self) -> dict[str, Section]:
        root = self._root
        return {
            "system": hashed(system_section(root, self._sources)),
            "os": hashed(os_section(root)),
            "network": hashed(network_section(root)),
            "applications": self._applications(),
            "users": hashed(users_section(root)),
            "filesystems": hashed(filesystems_section(root, self._sources)),
        }

    def _applications(self) -> gc.ApplicationsSection:
        stamp = facts.package_db_stamp(self._root)
        if self._apps is None or stamp != self._apps_stamp:
            self._apps = hashed(applications_section(self._root, self._filter))
            self._apps_stamp = stamp
        return self._apps
