"""Facts about the guest, each read from files under a filesystem root.

Every collector takes `root` (normally ``/``) so tests can point it at a fake tree.
Collectors never raise for a missing or unreadable file: they return an empty or
zero value, because a partial report is better than none. Lists come back
sorted so that an unchanged fact serialises to the same bytes. Network
interfaces are in guestd.netfacts.

Runs inside guests: standard library only, Python >= 3.9.
"""

from __future__ import annotations

import fnmatch
import logging
import os
import shlex
import shutil
import socket
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Sequence

log = logging.getLogger(__name__)

MAX_TEXT = 256
"""Longest string kept from a single-value fact (hostname, os-release values)."""
MAX_APPLICATIONS = 5000
MAX_APPLICATION_TEXT = 200
APPLICATIONS_BUDGET = 160 * 1024
"""Bytes of application entries kept, so that a full report fits in one frame."""
RPM_TIMEOUT = 30.0
RPM_QUERY_FORMAT = "%{NAME} %{VERSION}-%{RELEASE}\\n"

DPKG_STATUS = "var/lib/dpkg/status"
RPM_DATABASES = (
    "var/lib/rpm/rpmdb.sqlite",
    "var/lib/rpm/Packages",
    "usr/lib/sysimage/rpm/rpmdb.sqlite",
    "usr/lib/sysimage/rpm/Packages",
)


@dataclass(frozen=True)
class OsInfo:
    """What identifies the operating system; see os-release(5)."""

    name: str
    version: str
    id: str
    kernel_release: str
    architecture: str


def read_text(path: Path, limit: int = 1 << 20) -> str | None:
    """Returns the start of a text file, or None if it cannot be read."""
    try:
        with path.open("rb") as f:
            return f.read(limit).decode("utf-8", errors="replace")
    except OSError:
        return None


def hostname(root: Path) -> str:
    text = read_text(root / "proc/sys/kernel/hostname")
    name = text.strip() if text else ""
    return (name or socket.gethostname())[:MAX_TEXT]


def parse_os_release(text: str) -> dict[str, str]:
    """Parses os-release's KEY=value lines; values may be shell-quoted."""
    fields: dict[str, str] = {}
    for raw_line in text.splitlines():
        line = raw_line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, raw = line.partition("=")
        try:
            words = shlex.split(raw)
        except ValueError:
            words = [raw]
        fields[key.strip()] = " ".join(words)[:MAX_TEXT]
    return fields


def os_info(root: Path) -> OsInfo:
    text = read_text(root / "etc/os-release")
    if text is None:
        text = read_text(root / "usr/lib/os-release") or ""
    fields = parse_os_release(text)
    uname = os.uname()
    return OsInfo(
        name=fields.get("NAME", ""),
        version=fields.get("VERSION_ID", ""),
        id=fields.get("ID", ""),
        kernel_release=uname.release,
        architecture=uname.machine,
    )


def uptime_seconds(root: Path) -> float:
    text = read_text(root / "proc/uptime") or ""
    try:
        return float(text.split()[0])
    except (IndexError, ValueError):
        return 0.0


def cpu_count() -> int:
    return os.cpu_count() or 0


def meminfo(root: Path) -> dict[str, int]:
    """The numeric fields of /proc/meminfo (KiB for the memory ones)."""
    values: dict[str, int] = {}
    for line in (read_text(root / "proc/meminfo") or "").splitlines():
        key, _, rest = line.partition(":")
        words = rest.split()
        if words and words[0].isdigit():
            values[key] = int(words[0])
    return values


def free_memory_kib(root: Path) -> int:
    """MemAvailable from /proc/meminfo (MemFree on kernels without it), in KiB."""
    values = meminfo(root)
    return values.get("MemAvailable", values.get("MemFree", 0))


def memory_total_kib(root: Path) -> int:
    """MemTotal from /proc/meminfo: the RAM the guest kernel manages, in KiB."""
    return meminfo(root).get("MemTotal", 0)


def package_db_stamp(root: Path) -> tuple[str, int, int] | None:
    """(path, mtime_ns, size) of the package database, None if there is none.

    The applications list is read again only when this changes.
    """
    for rel in (DPKG_STATUS, *RPM_DATABASES):
        try:
            st = (root / rel).stat()
        except OSError:
            continue
        return rel, st.st_mtime_ns, st.st_size
    return None


def applications(root: Path, patterns: Sequence[str] = ()) -> list[str]:
    """'name version' of each installed package: dpkg's database, else rpm's.

    With patterns, only packages whose name matches one of them (fnmatch,
    case-sensitive) are kept.
    """
    status = root / DPKG_STATUS
    if status.exists():
        found = dpkg_installed(status)
    elif shutil.which("rpm"):
        found = rpm_installed(root)
    else:
        return []
    return cap_entries(matching(found, patterns) if patterns else found)


def matching(entries: Iterable[str], patterns: Sequence[str]) -> list[str]:
    """The 'name version' entries whose name matches one of the fnmatch patterns."""
    return [e for e in entries if any(fnmatch.fnmatchcase(e.split(" ", 1)[0], p) for p in patterns)]


def cap_entries(entries: list[str]) -> list[str]:
    """Sorted, unique, and bounded in count, entry length and total bytes."""
    kept: list[str] = []
    budget = APPLICATIONS_BUDGET
    for entry in sorted({e[:MAX_APPLICATION_TEXT] for e in entries if e}):
        budget -= len(entry.encode()) + 3
        if budget < 0 or len(kept) >= MAX_APPLICATIONS:
            log.warning("keeping only %d of %d applications", len(kept), len(entries))
            break
        kept.append(entry)
    return kept


def dpkg_installed(status: Path) -> list[str]:
    """Packages whose Status is 'install ok installed' in a dpkg status file."""
    found: list[str] = []
    try:
        with status.open(encoding="utf-8", errors="replace") as f:
            for stanza in _stanzas(f):
                if stanza.get("Status") == "install ok installed" and "Package" in stanza:
                    found.append(f"{stanza['Package']} {stanza.get('Version', '')}".strip())
    except OSError as exc:
        log.warning("cannot read %s: %s", status, exc)
    return found


def _stanzas(lines: Iterable[str]) -> Iterator[dict[str, str]]:
    """Yields the fields of each blank-line separated stanza (continuations dropped)."""
    stanza: dict[str, str] = {}
    for line in lines:
        if not line.strip():
            if stanza:
                yield stanza
            stanza = {}
        elif not line[0].isspace() and ":" in line:
            key, _, value = line.partition(":")
            stanza[key] = value.strip()
    if stanza:
        yield stanza


def rpm_installed(root: Path) -> list[str]:
    cmd = ["rpm", "--root", str(root), "-qa", "--qf", RPM_QUERY_FORMAT]
    try:
        done = subprocess.run(
            cmd, capture_output=True, timeout=RPM_TIMEOUT, check=True, stdin=subprocess.DEVNULL
        )
    except (OSError, subprocess.SubprocessError) as exc:
        log.warning("rpm query failed: %s", exc)
        return []
    text = done.stdout.decode("utf-8", errors="replace")
    return [line.strip() for line in text.splitlines() if line.strip()]
