"""Human-readable rendering of the client's models for the CLI."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Literal

from virtplane_client.models import (
    Balancing,
    BalancingPolicy,
    Event,
    ExitReason,
    GuestFact,
    GuestInfo,
    Host,
    HostState,
    MigrationPhase,
    MigrationTransfer,
    Operation,
    OperationKind,
    OperationState,
    Origin,
    Placement,
    Vm,
    VmState,
)

_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def utc(at: dt.datetime | None) -> dt.datetime:
    """A time as naive UTC, for printing with a Z; the epoch when unset."""
    return (at or _EPOCH).astimezone(dt.UTC).replace(tzinfo=None)


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [len(h) for h in headers]
    for row in rows:
        widths = [max(w, len(c)) for w, c in zip(widths, row, strict=True)]
    lines = [headers, *rows]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip() for line in lines
    )


def vm_state(state: VmState) -> str:
    return state.name


def host_state(state: HostState) -> str:
    return state.name


def exit_reason(reason: ExitReason) -> str:
    if reason is ExitReason.UNSPECIFIED:
        return ""
    return reason.name.lower()


def addresses(guest: GuestInfo | None) -> str:
    return ",".join(guest.ipv4_addresses) if guest else ""


def guest_summary(guest: GuestInfo | None) -> str:
    """One line: what the guest agent reported."""
    if guest is None:
        return ""
    os_name = " ".join(p for p in (guest.os_name, guest.os_version) if p)
    return (
        f"ip={addresses(guest) or '-'} os={os_name or '-'!r} "
        f"apps={guest.application_count} uptime={guest.uptime_seconds:.1f}s "
        f"hostname={guest.hostname or '-'}"
    )


def vms(items: Sequence[Vm], hosts: dict[str, str]) -> str:
    rows = [
        [
            vm.name,
            vm_state(vm.status.state),
            hosts.get(vm.status.host_id, vm.status.host_id),
            str(vm.spec.vcpus),
            f"{vm.spec.memory_mib} MiB",
            addresses(vm.status.guest),
            exit_reason(vm.status.exit_reason) or vm.status.message,
        ]
        for vm in items
    ]
    return table(["NAME", "STATE", "HOST", "VCPUS", "MEMORY", "IP", "DETAIL"], rows)


def hosts(items: Sequence[Host]) -> str:
    rows = [
        [
            h.name,
            host_state(h.status.state),
            h.address,
            str(h.status.cpus),
            f"{h.status.memory_free_mib}/{h.status.memory_total_mib} MiB",
            str(h.status.vms_running),
            h.status.hypervisor_type,
            h.status.message,
        ]
        for h in items
    ]
    return table(["NAME", "STATE", "ADDRESS", "CPUS", "FREE/TOTAL", "VMS", "HV", "DETAIL"], rows)


def _vm_options(vm: Vm) -> list[str]:
    """vm_detail's lines for what is set beyond the basics."""
    lines = []
    if vm.status.pending_restart:
        n = vm.next_run_spec
        vcpus, memory = (n.vcpus, n.memory_mib) if n else (0, 0)
        lines.append(
            f"pending: {', '.join(vm.status.pending_restart)} at the next start"
            f" ({vcpus} vCPU, {memory} MiB)"
        )
    if vm.spec.custom_properties:
        props = ", ".join(f"{k}={v}" for k, v in sorted(vm.spec.custom_properties.items()))
        lines.append(f"props:   {props}")
    if vm.spec.start_paused:
        lines.append("start:   paused (a second start runs it)")
    if vm.spec.highly_available or vm.spec.pinned_host:
        lines.append(
            f"placing: highly available={'yes' if vm.spec.highly_available else 'no'}, "
            f"pinned to {vm.spec.pinned_host or 'no host'}"
        )
    return lines


def vm_detail(vm: Vm, hosts: dict[str, str] | None = None) -> str:
    """The VM's fields, one per line; its host by name when hosts maps ids to names."""
    s = vm.status
    host = (hosts or {}).get(s.host_id, s.host_id)
    lines = [
        f"name:    {vm.name}",
        f"id:      {vm.id}",
        f"state:   {vm_state(s.state)}",
        f"host:    {host or '-'}",
        f"spec:    {vm.spec.vcpus} vCPU, {vm.spec.memory_mib} MiB",
    ]
    if vm.spec.disks:
        disks = ", ".join(f"{d.name}={d.path}" for d in vm.spec.disks)
        lines.append(f"disks:   {disks}")
    lines.append(f"version: {vm.spec_version}")
    lines += _vm_options(vm)
    if s.origin is Origin.EXTERNAL:
        lines.append("origin:  external (found on its host, not created here)")
    if s.start_tries:
        tried = "; ".join(f"{t.host_name}: {t.error}" for t in s.start_tries)
        lines.append(f"tried:   {tried}")
    if s.ha_restart_time is not None:
        when = utc(s.ha_restart_time).strftime("%H:%M:%S")
        lines.append(f"restart: try {s.ha_restart_count + 1} due at {when} UTC")
    if s.exit_reason is not ExitReason.UNSPECIFIED or s.message:
        lines.append(f"detail:  {exit_reason(s.exit_reason)} {s.message}".rstrip())
    if s.guest is not None:
        lines.append(f"guest:   {guest_summary(s.guest)}")
    return "\n".join(lines)


def guest_facts(facts: Sequence[GuestFact], verbose: bool) -> str:
    """A table of guest facts: name, source, when observed, value."""
    rows = []
    for f in facts:
        value = f.value_json if verbose or len(f.value_json) <= 60 else f.value_json[:57] + "..."
        observed = utc(f.observed_time).strftime("%Y-%m-%d %H:%M:%S")
        observed += " (stale)" if f.stale else ""
        rows.append([f.name, f.source, observed, value])
    return table(["FACT", "SOURCE", "OBSERVED (UTC)", "VALUE"], rows)


def placement(reply: Placement) -> str:
    """One row per host and filter, the weights' scores, and the choice."""
    rows = []
    for host in reply.hosts:
        for f in host.filters:
            verdict = "pass" if f.passed else "REJECT"
            rows.append([host.host_name, f.filter, verdict, f.reason])
        for w in host.weights:
            rows.append([host.host_name, f"weight {w.weight}", f"{w.score:g}", ""])
    chosen = reply.chosen_host_name or "none: no host fits"
    return f"{table(['HOST', 'CHECK', 'VERDICT', 'WHY'], rows)}\nchosen: {chosen}"


def balancing(reply: Balancing) -> str:
    """Every host's load, the policy, and what the balancer would do and why."""
    rows = [
        [
            h.host_name,
            f"{h.memory_percent:.0f}%",
            f"{h.cpu_percent:.0f}%",
            "-" if h.over_seconds is None else f"{h.over_seconds:.0f} s",
        ]
        for h in reply.hosts
    ]
    off = reply.policy is BalancingPolicy.OFF
    policy = reply.policy.name.lower().replace("_", "-") + (
        " (the balancer acts on nothing)" if off else ""
    )
    move = reply.move
    would = (
        "nothing"
        if move is None
        else (
            f"migrate {move.vm_name} from {move.source_host_name} to {move.destination_host_name}"
        )
    )
    return "\n".join(
        [
            table(["HOST", "MEMORY", "CPU", "OVER FOR"], rows),
            f"policy: {policy}; over {reply.high_percent}% for"
            f" {reply.sustained_seconds:.0f} s, to hosts under {reply.low_percent}%",
            f"would: {would}",
            f"why: {reply.reason}",
        ]
    )


Phase = Literal[
    "create_time",
    "scheduled_time",
    "dispatched_time",
    "accepted_time",
    "transferring_time",
    "switched_over_time",
    "powering_up_time",
    "up_time",
    "done_time",
]
# The phases of an operation, in order, as the CLI names them.
PHASES: tuple[tuple[str, Phase], ...] = (
    ("created", "create_time"),
    ("scheduled", "scheduled_time"),
    ("dispatched", "dispatched_time"),
    ("accepted", "accepted_time"),
    ("transferring", "transferring_time"),
    ("switchover", "switched_over_time"),
    ("powering-up", "powering_up_time"),
    ("up", "up_time"),
    ("done", "done_time"),
)


def op_state(state: OperationState) -> str:
    return state.name


def op_kind(kind: OperationKind) -> str:
    return kind.name.lower()


def operation(op: Operation) -> str:
    """The operation and each phase it reached, with the seconds since it began."""
    lines = [
        f"operation: {op.id}",
        f"kind:      {op_kind(op.kind)}",
        f"vm:        {op.vm_id}",
        f"state:     {op_state(op.state)}",
    ]
    if op.state is OperationState.FAILED:
        code, message = (op.error.code, op.error.message) if op.error else ("", "")
        lines.append(f"error:     {code}: {message}")
    if op.migration is not None:
        lines.append(f"transfer:  {transfer(op.migration)}")
    start = utc(op.phases.create_time)
    for label, field in PHASES:
        reached: dt.datetime | None = getattr(op.phases, field)
        if reached is not None:
            at = utc(reached)
            offset = (at - start).total_seconds()
            lines.append(f"  {label:<12} {at.isoformat(timespec='milliseconds')}Z  +{offset:.3f}s")
    return "\n".join(lines)


def size(count: int) -> str:
    """A number of bytes in binary units, e.g. 1.5 GiB."""
    value = float(count)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024:
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"


def transfer(t: MigrationTransfer) -> str:
    """A migration's transfer in one line: its progress, or how it ended."""
    passes = f"{t.iterations} iteration{'' if t.iterations == 1 else 's'}"
    note = f" ({t.message})" if t.message else ""  # e.g. switched to post-copy, why
    if t.phase is MigrationPhase.SWITCHED_OVER:
        return f"switched over after {passes}, {t.elapsed_ms} ms; downtime {t.downtime_ms} ms{note}"
    progress = (
        f"{t.percent}%, {size(t.data_remaining_bytes)} of {size(t.data_total_bytes)} left, "
        f"iteration {t.iterations}, {size(t.bytes_per_second)}/s"
    )
    if t.phase is MigrationPhase.TRANSFERRING:
        return f"transferring {progress}{note}"
    return f"{t.phase.name.lower()} at {t.percent}%: {t.message}"


def operations(items: Sequence[Operation]) -> str:
    rows = [
        [
            op.id,
            op_kind(op.kind),
            op.vm_id,
            op_state(op.state),
            utc(op.phases.create_time).isoformat(timespec="seconds") + "Z",
            op.error.message if op.error else "",
        ]
        for op in items
    ]
    return table(["ID", "KIND", "VM", "STATE", "CREATED", "ERROR"], rows)


def events(items: Sequence[Event]) -> str:
    rows = [
        [
            str(e.id),
            utc(e.time).isoformat(timespec="milliseconds") + "Z",
            e.kind,
            e.vm_id or e.host_id,
            e.request_id,
            e.message,
        ]
        for e in items
    ]
    return table(["ID", "TIME", "KIND", "VM/HOST", "REQUEST", "MESSAGE"], rows)
