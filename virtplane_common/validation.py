"""The checks of what a client or the controller sends, made alike by the
controller and hostd, each worded once.

Each takes the field's path as the caller names it ("spec.vcpus",
"config.spec.vcpus", ...) and raises InvalidArgument naming that field.
Patterns are matched whole (re.fullmatch: a trailing newline is refused),
text must be printable (no NUL, no control characters), and lengths come
from virtplane_common.limits, the table the database's columns use. What only
one side can check stays with it: hostd checks paths on its own filesystem.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from virtplane_common.errors import InvalidArgument
from virtplane_common.limits import (
    DISK_NAME,
    MAC,
    MAX_ADDRESS,
    MAX_AGENT_VERSION,
    MAX_CMDLINE,
    MAX_DISK_NAME,
    MAX_DISKS,
    MAX_MEMORY_MIB,
    MAX_NAME,
    MAX_NETWORK,
    MAX_NIC_NAME,
    MAX_NICS,
    MAX_PATH,
    MAX_VCPUS,
    MIN_MEMORY_MIB,
    NAME,
    NAME_COLUMN,
    NETWORK,
    NIC_NAME,
)

_NAMED = "letters, digits, '.', '_' or '-', starting with a letter or digit"
_HOSTNAME = re.compile(r"[A-Za-z0-9]([A-Za-z0-9.-]{0,253}[A-Za-z0-9])?")
_BRACKETED = re.compile(r"\[[0-9A-Fa-f:.]{2,45}\]")


def check_printable(field: str, value: str, limit: int) -> str:
    """value, if it is at most limit characters, none of them a control character."""
    if len(value) > limit:
        raise InvalidArgument(field, f"must be at most {limit} characters (got {len(value)})")
    if not value.isprintable():
        raise InvalidArgument(field, "must be printable text (no NUL or control characters)")
    return value


def check_reference(field: str, value: str) -> str:
    """An object's id or name as a lookup takes it: required, printable (a
    NUL is refused here, not by PostgreSQL), at most a name column long."""
    if not value:
        raise InvalidArgument(field, "is required (an id or a name)")
    return check_printable(field, value, NAME_COLUMN)


def _check_pattern(field: str, value: str, pattern: re.Pattern[str], limit: int) -> str:
    if not value:
        raise InvalidArgument(field, "is required")
    if not pattern.fullmatch(value):
        raise InvalidArgument(field, f"must be 1-{limit} {_NAMED} (got {value[:80]!r})")
    return value


def check_name(field: str, name: str) -> str:
    """A VM's or host's name: it names domains and files."""
    return _check_pattern(field, name, NAME, MAX_NAME)


def check_nic_name(field: str, name: str) -> str:
    return _check_pattern(field, name, NIC_NAME, MAX_NIC_NAME)


def check_disk_name(field: str, name: str) -> str:
    return _check_pattern(field, name, DISK_NAME, MAX_DISK_NAME)


def check_network(field: str, network: str) -> str:
    """A libvirt network's name."""
    return _check_pattern(field, network, NETWORK, MAX_NETWORK)


def check_mac(field: str, mac: str) -> str:
    """Returns a set MAC address in lower case; raises unless it is a unicast one."""
    lower = mac.lower()
    if not MAC.fullmatch(lower):
        raise InvalidArgument(field, f"must look like 52:54:00:12:34:56 (got {mac[:80]!r})")
    if int(lower[:2], 16) & 1:
        raise InvalidArgument(field, f"must be a unicast address (got {mac})")
    return lower


def check_unique_macs(field: str, macs: Iterable[str]) -> None:
    """Refuses a MAC address set on two NICs of one request (field: the NICs' list)."""
    first: dict[str, int] = {}
    for index, mac in enumerate(macs):
        if not mac:
            continue
        if mac in first:
            raise InvalidArgument(
                f"{field}[{index}].mac_address", f"{mac} is also {field}[{first[mac]}]'s"
            )
        first[mac] = index


def check_cmdline(field: str, cmdline: str) -> str:
    return check_printable(field, cmdline, MAX_CMDLINE)


def check_path(field: str, path: str, *, required: bool) -> str:
    """An absolute path, printable; empty when not required and not set."""
    if not path:
        if required:
            raise InvalidArgument(field, "is required")
        return ""
    check_printable(field, path, MAX_PATH)
    if not path.startswith("/"):
        raise InvalidArgument(field, f"must be an absolute path (got {path[:80]!r})")
    return path


def check_address(field: str, address: str) -> str:
    """host:port, the host a DNS name, an IPv4 address or a bracketed IPv6 one."""
    if not address:
        raise InvalidArgument(field, "is required")
    check_printable(field, address, MAX_ADDRESS)
    host, sep, port = address.rpartition(":")
    if (
        not sep
        or not (_HOSTNAME.fullmatch(host) or _BRACKETED.fullmatch(host))
        or not (port.isascii() and port.isdigit() and len(port) <= 5)
        or not 0 < int(port) < 65536
    ):
        raise InvalidArgument(field, f"must be host:port (got {address[:80]!r})")
    return address


def clean_agent_version(value: str) -> str:
    """The one rule for a guest agent's version, which comes from the guest:
    printable characters only, trimmed, at most MAX_AGENT_VERSION. It cleans
    rather than refuses: what a guest sends never fails its VM's start."""
    kept = "".join(ch for ch in value[: MAX_AGENT_VERSION * 4] if ch.isprintable())
    return kept.strip()[:MAX_AGENT_VERSION]


def check_vcpus(field: str, vcpus: int) -> None:
    if vcpus > MAX_VCPUS:
        raise InvalidArgument(field, f"must be at most {MAX_VCPUS} (got {vcpus})")


def check_memory(field: str, memory_mib: int) -> None:
    if not MIN_MEMORY_MIB <= memory_mib <= MAX_MEMORY_MIB:
        raise InvalidArgument(
            field, f"must be between {MIN_MEMORY_MIB} and {MAX_MEMORY_MIB} MiB (got {memory_mib})"
        )


def check_nic_count(field: str, count: int) -> None:
    if count > MAX_NICS:
        raise InvalidArgument(field, f"at most {MAX_NICS} NICs (got {count})")


def check_disk_count(field: str, count: int) -> None:
    if count > MAX_DISKS:
        raise InvalidArgument(field, f"at most {MAX_DISKS} disks (got {count})")
