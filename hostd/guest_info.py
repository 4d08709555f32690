"""Turning untrusted guest reports into GuestInfo: sanitising and merging, nothing else.

Every string is cleaned (control and format characters dropped, whitespace
trimmed, length capped), every list capped, addresses parsed, numbers
checked; what does not survive is dropped rather than passed on.
"""

from __future__ import annotations

import ipaddress
import math
import unicodedata
from collections.abc import Iterable

from google.protobuf.timestamp_pb2 import Timestamp
from virtplane.v1 import guest_channel_pb2 as gc
from virtplane.v1 import vm_pb2

from hostd.config import ChannelLimits
from virtplane_common.limits import MAC

MAX_UPTIME_SECONDS = 100 * 365 * 24 * 3600.0
MAX_UNIX_SECONDS = 253402300799  # 9999-12-31, the largest a Timestamp holds
MAX_CPUS = 1 << 16
_LINE_SEPARATORS = frozenset("\u2028\u2029")


def clean_text(value: str, limit: int) -> str:
    """value without control/format/unassigned characters, trimmed, at most limit characters."""
    # Look at a bounded prefix only: cleaning must not cost more than the cap is worth.
    kept = "".join(
        ch
        for ch in value[: limit * 4]
        if unicodedata.category(ch)[0] != "C" and ch not in _LINE_SEPARATORS
    )
    return kept.strip()[:limit]


def clean_texts(values: Iterable[str], max_items: int, limit: int) -> list[str]:
    """The first max_items values cleaned, dropping any that end up empty."""
    out: list[str] = []
    for value in values:
        if len(out) >= max_items:
            break
        text = clean_text(value, limit)
        if text:
            out.append(text)
    return out


def clean_seconds(value: float) -> float | None:
    """A duration in seconds if it is plausible, else None."""
    if math.isfinite(value) and 0.0 <= value <= MAX_UPTIME_SECONDS:
        return value
    return None


def clean_address(value: str, version: int) -> str | None:
    """An IP address ("10.0.2.15" or "10.0.2.15/24") of the given version, normalised."""
    text = value.strip()[:64]
    try:
        if "/" in text:
            interface = ipaddress.ip_interface(text)
            address, out = interface.ip, str(interface)
        else:
            address = ipaddress.ip_address(text)
            out = str(address)
    except ValueError:
        return None
    return out if address.version == version else None


def clean_mac(value: str) -> str:
    mac = value.strip().lower()[:17]
    return mac if MAC.fullmatch(mac) else ""


def observed_nanos(sent_nanos: int, received_nanos: int, max_skew_seconds: float) -> int:
    """The guest's timestamp if its clock looks sane, else the time hostd received the message."""
    if sent_nanos > 0 and abs(sent_nanos - received_nanos) <= max_skew_seconds * 1e9:
        return sent_nanos
    return received_nanos


def timestamp(nanos: int) -> Timestamp:
    stamp = Timestamp()
    stamp.FromNanoseconds(nanos)
    return stamp


def merge_report(
    current: vm_pb2.GuestInfo, report: gc.GuestReport, limits: ChannelLimits
) -> vm_pb2.GuestInfo:
    """The GuestInfo after a report: a full report replaces every section, a partial
    one only the sections it carries. Timestamps are the caller's business."""
    merged = vm_pb2.GuestInfo()
    if report.full:
        merged.agent_version = current.agent_version
        merged.agent_state = current.agent_state
        merged.memory_free_kib = current.memory_free_kib  # the heartbeat's, not a report's
        merged.last_report_time.CopyFrom(current.last_report_time)
        merged.last_heard_time.CopyFrom(current.last_heard_time)
    else:
        merged.CopyFrom(current)
    text = limits.max_string
    if report.HasField("system"):
        system = report.system
        merged.hostname = clean_text(system.hostname, text)
        merged.uptime_seconds = clean_seconds(system.uptime_seconds) or 0.0
        merged.fqdn = clean_text(system.fqdn, text)
        merged.timezone = clean_text(system.timezone, text)
        merged.cpus = min(system.cpus, MAX_CPUS)
        merged.memory_total_kib = system.memory_total_kib
    if report.HasField("os"):
        merged.os_name = clean_text(report.os.name, text)
        merged.os_version = clean_text(report.os.version, text)
        merged.kernel_release = clean_text(report.os.kernel_release, text)
        merged.architecture = clean_text(report.os.architecture, text)
    if report.HasField("users"):
        del merged.users[:]
        merged.users.extend(_user(u, limits) for u in report.users.users[: limits.max_users])
    if report.HasField("filesystems"):
        del merged.filesystems[:]
        merged.filesystems.extend(
            _filesystem(f, limits) for f in report.filesystems.filesystems[: limits.max_filesystems]
        )
    if report.HasField("network"):
        del merged.interfaces[:]
        for nic in report.network.interfaces[: limits.max_interfaces]:
            merged.interfaces.append(_interface(nic, limits))
    if report.HasField("applications"):
        apps = report.applications.applications
        merged.application_count = len(apps)
        del merged.applications[:]
        merged.applications.extend(clean_texts(apps, limits.max_applications, text))
    return merged


def _interface(nic: gc.NetworkInterface, limits: ChannelLimits) -> vm_pb2.GuestInterface:
    return vm_pb2.GuestInterface(
        name=clean_text(nic.name, limits.max_string),
        mac_address=clean_mac(nic.mac_address),
        ipv4_addresses=_addresses(nic.ipv4_addresses, 4, limits.max_addresses),
        ipv6_addresses=_addresses(nic.ipv6_addresses, 6, limits.max_addresses),
    )


def _user(user: gc.LoggedInUser, limits: ChannelLimits) -> vm_pb2.GuestUser:
    out = vm_pb2.GuestUser(
        name=clean_text(user.name, limits.max_string),
        terminal=clean_text(user.terminal, limits.max_string),
        host=clean_text(user.host, limits.max_string),
    )
    if 0 < user.login_unix_seconds < MAX_UNIX_SECONDS:
        out.login_time.FromSeconds(user.login_unix_seconds)
    return out


def _filesystem(fs: gc.Filesystem, limits: ChannelLimits) -> vm_pb2.GuestFilesystem:
    return vm_pb2.GuestFilesystem(
        mount_point=clean_text(fs.mount_point, limits.max_string),
        type=clean_text(fs.type, limits.max_string),
        device=clean_text(fs.device, limits.max_string),
        total_bytes=fs.total_bytes,
        used_bytes=min(fs.used_bytes, fs.total_bytes),
    )


def _addresses(values: Iterable[str], version: int, max_items: int) -> list[str]:
    out: list[str] = []
    for value in values:
        if len(out) >= max_items:
            break
        address = clean_address(value, version)
        if address is not None:
            out.append(address)
    return out
