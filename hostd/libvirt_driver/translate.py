"""libvirt's codes as hostd's values: lifecycle events, errors, states, statistics.

Pure functions over libvirt's constants; the rest of hostd.libvirt_driver is
the only caller, and that package is the only part of hostd importing libvirt.
"""

from __future__ import annotations

from collections.abc import Mapping

import libvirt

from hostd.errors import (
    DomainAlreadyExists,
    DomainNotFound,
    DomainStateConflict,
    HypervisorError,
    HypervisorUnavailable,
    JobAborted,
    OperationUnsupported,
)
from hostd.hypervisor import (
    DiskCounters,
    DomainState,
    DomainStats,
    JobProgress,
    LifecycleEvent,
    LifecycleKind,
    NicCounters,
    StopReason,
)
from virtplane_common.errors import VirtplaneError

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
STATES: dict[int, DomainState] = {
    libvirt.VIR_DOMAIN_RUNNING: DomainState.RUNNING,
    libvirt.VIR_DOMAIN_PAUSED: DomainState.PAUSED,
    libvirt.VIR_DOMAIN_SHUTDOWN: DomainState.SHUTTING_DOWN,
    libvirt.VIR_DOMAIN_SHUTOFF: DomainState.SHUT_OFF,
    libvirt.VIR_DOMAIN_CRASHED: DomainState.CRASHED,
}
_STATE_NAMES: dict[int, str] = {
    libvirt.VIR_DOMAIN_NOSTATE: "no state",
    libvirt.VIR_DOMAIN_RUNNING: "running",
    libvirt.VIR_DOMAIN_BLOCKED: "blocked",
    libvirt.VIR_DOMAIN_PAUSED: "paused",
    libvirt.VIR_DOMAIN_SHUTDOWN: "shutting down",
    libvirt.VIR_DOMAIN_SHUTOFF: "shut off",
    libvirt.VIR_DOMAIN_CRASHED: "crashed",
    libvirt.VIR_DOMAIN_PMSUSPENDED: "suspended to RAM",
}


def _reasons(prefix: str) -> dict[int, str]:
    """libvirt's reason constants of one state, named: VIR_DOMAIN_PAUSED_SAVE -> "save"."""
    return {
        value: name.removeprefix(prefix).lower().replace("_", " ")
        for name, value in vars(libvirt).items()
        if name.startswith(prefix) and isinstance(value, int) and not name.endswith("_LAST")
    }


# The SHUTDOWN state's reasons share their prefix with shutdown()'s flags: listed by hand.
_REASONS: dict[int, dict[int, str]] = {
    libvirt.VIR_DOMAIN_RUNNING: _reasons("VIR_DOMAIN_RUNNING_"),
    libvirt.VIR_DOMAIN_PAUSED: _reasons("VIR_DOMAIN_PAUSED_"),
    libvirt.VIR_DOMAIN_SHUTDOWN: {0: "unknown", 1: "user"},
    libvirt.VIR_DOMAIN_SHUTOFF: _reasons("VIR_DOMAIN_SHUTOFF_"),
    libvirt.VIR_DOMAIN_CRASHED: _reasons("VIR_DOMAIN_CRASHED_"),
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
    if code in (libvirt.VIR_ERR_NO_SUPPORT, libvirt.VIR_ERR_ARGUMENT_UNSUPPORTED):
        return OperationUnsupported(f"the hypervisor cannot do this: {message}")
    if code == libvirt.VIR_ERR_OPERATION_ABORTED:
        return JobAborted(message)
    if code in _CONNECTION_CODES or exc.get_error_domain() == libvirt.VIR_FROM_RPC:
        return HypervisorUnavailable(f"libvirt: {message}")
    return HypervisorError(message)


_SHUTOFF_REASONS: dict[int, StopReason] = {
    libvirt.VIR_DOMAIN_SHUTOFF_SHUTDOWN: StopReason.SHUTDOWN,
    libvirt.VIR_DOMAIN_SHUTOFF_DESTROYED: StopReason.DESTROYED,
    libvirt.VIR_DOMAIN_SHUTOFF_CRASHED: StopReason.CRASHED,
    libvirt.VIR_DOMAIN_SHUTOFF_MIGRATED: StopReason.MIGRATED,
    libvirt.VIR_DOMAIN_SHUTOFF_SAVED: StopReason.SAVED,
    libvirt.VIR_DOMAIN_SHUTOFF_FAILED: StopReason.FAILED,
}


def stop_reason(state: int, reason: int) -> StopReason | None:
    """Why a shut-off domain stopped; None for one that never ran (reason unknown)."""
    if state != libvirt.VIR_DOMAIN_SHUTOFF:
        return None
    return _SHUTOFF_REASONS.get(reason)


def is_saving(state: int, reason: int) -> bool:
    """Whether a domain is paused for a save to file."""
    return bool(state == libvirt.VIR_DOMAIN_PAUSED and reason == libvirt.VIR_DOMAIN_PAUSED_SAVE)


def is_starting(state: int, reason: int) -> bool:
    """Whether a domain is paused because its start is still under way."""
    return bool(
        state == libvirt.VIR_DOMAIN_PAUSED and reason == libvirt.VIR_DOMAIN_PAUSED_STARTING_UP
    )


def state_words(state: int, reason: int) -> tuple[str, str]:
    """A libvirt state and reason in words: (1, 1) -> ("running", "booted")."""
    name = _STATE_NAMES.get(state, f"state {state}")
    return name, _REASONS.get(state, {}).get(reason, "unknown")


STATS_GROUPS = (
    libvirt.VIR_DOMAIN_STATS_STATE
    | libvirt.VIR_DOMAIN_STATS_CPU_TOTAL
    | libvirt.VIR_DOMAIN_STATS_BALLOON
    | libvirt.VIR_DOMAIN_STATS_VCPU
    | libvirt.VIR_DOMAIN_STATS_INTERFACE
    | libvirt.VIR_DOMAIN_STATS_BLOCK
)
"""What domain_stats asks domainListGetStats for."""


def parse_stats(records: Mapping[str, object]) -> DomainStats:
    """One domain's domainListGetStats record as DomainStats; absent keys count 0."""

    def number(key: str) -> int:
        value = records.get(key, 0)
        return value if isinstance(value, int) else 0

    def text(key: str) -> str:
        return str(records.get(key, ""))

    state, reason = number("state.state"), number("state.reason")
    name, why = state_words(state, reason)
    disks = tuple(
        DiskCounters(
            name=text(f"block.{i}.name"),
            path=text(f"block.{i}.path"),
            read_requests=number(f"block.{i}.rd.reqs"),
            read_bytes=number(f"block.{i}.rd.bytes"),
            write_requests=number(f"block.{i}.wr.reqs"),
            write_bytes=number(f"block.{i}.wr.bytes"),
        )
        for i in range(number("block.count"))
        if f"block.{i}.name" in records
    )
    nics = tuple(
        NicCounters(
            name=text(f"net.{i}.name"),
            rx_bytes=number(f"net.{i}.rx.bytes"),
            rx_packets=number(f"net.{i}.rx.pkts"),
            rx_errors=number(f"net.{i}.rx.errs"),
            rx_drops=number(f"net.{i}.rx.drop"),
            tx_bytes=number(f"net.{i}.tx.bytes"),
            tx_packets=number(f"net.{i}.tx.pkts"),
            tx_errors=number(f"net.{i}.tx.errs"),
            tx_drops=number(f"net.{i}.tx.drop"),
        )
        for i in range(number("net.count"))
        if f"net.{i}.name" in records
    )
    return DomainStats(
        state=STATES.get(state, DomainState.OTHER),
        state_name=name,
        state_reason=why,
        cpu_time_ns=number("cpu.time"),
        cpu_user_ns=number("cpu.user"),
        cpu_system_ns=number("cpu.system"),
        vcpus=number("vcpu.current"),
        memory_current_kib=number("balloon.current"),
        memory_maximum_kib=number("balloon.maximum"),
        memory_rss_kib=number("balloon.rss"),
        disks=disks,
        nics=nics,
    )


def parse_job(stats: Mapping[str, object]) -> JobProgress:
    """A domain's jobStats() as JobProgress; absent keys count 0."""

    def number(key: str) -> int:
        value = stats.get(key, 0)
        return value if isinstance(value, int) else 0

    return JobProgress(
        elapsed_ms=number("time_elapsed"),
        data_total=number("data_total"),
        data_processed=number("data_processed"),
        data_remaining=number("data_remaining"),
        bytes_per_second=number("memory_bps"),
        dirty_pages_per_second=number("memory_dirty_rate"),
        iterations=number("memory_iteration"),
        downtime_ms=number("downtime"),
    )
