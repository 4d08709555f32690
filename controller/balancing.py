"""Balancing, like oVirt's evenly-distributed policy: the rules, as pure
functions over a snapshot of the hosts (controller.balancing_loop takes the
snapshot, keeps the clock and asks the migration).

A host is over when its memory or its vCPUs in use (what the VMs placed on
it book, as the scheduler counts it) exceed high_percent of its memory or
CPUs; it is under when both are below low_percent. decide() picks at most
one migration:

- the source: an UP host over for at least sustained_seconds (the first
  time it was seen over is kept by OverTracker, and forgotten as soon as the
  host dips under), the most loaded first;
- the VM: one of the source's UP VMs, not pinned, not migrating; the
  smallest whose move brings the host under the high threshold, else the
  largest below that (in the resource that is over);
- the destination: the scheduler's own filters and weights
  (controller.scheduler.place, affinity respected) over the hosts under the
  low threshold only, and one that the move does not push over the high.

Each answer, a move or nothing, carries its reason in words.
"""

from __future__ import annotations

import datetime as dt
import enum
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from controller.scheduler import Demand, HostCapacity, Policy, place
from db.enums import HostState, VmState


class BalancePolicy(enum.Enum):
    OFF = "off"
    EVENLY_DISTRIBUTED = "evenly-distributed"


@dataclass(frozen=True)
class BalanceSettings:
    """The cluster's balancing policy and its thresholds."""

    policy: BalancePolicy = BalancePolicy.OFF
    high_percent: int = 80
    low_percent: int = 40
    # How long a host must stay over high_percent before a VM leaves it.
    sustained_seconds: float = 300.0
    # Seconds between the balancer's looks (controller.balancing_loop).
    interval_seconds: float = 60.0

    def __post_init__(self) -> None:
        if not 0 <= self.low_percent < self.high_percent <= 100:
            raise ValueError(
                f"balancing thresholds need 0 <= low ({self.low_percent})"
                f" < high ({self.high_percent}) <= 100"
            )
        if self.sustained_seconds < 0 or self.interval_seconds <= 0:
            raise ValueError("balancing needs sustained >= 0 s and an interval > 0 s")


class Resource(enum.Enum):
    MEMORY = "memory"
    CPU = "cpu"


@dataclass(frozen=True)
class VmLoad:
    """One VM placed on a host, as the balancer sees it."""

    id: str
    name: str
    state: VmState
    pinned: bool
    # A migration of it is under way or waits its turn.
    migrating: bool
    # What it asks of a destination (its source excluded, its affinity).
    demand: Demand

    def size(self, resource: Resource) -> int:
        return self.demand.memory_mib if resource is Resource.MEMORY else self.demand.vcpus

    def why_not_movable(self) -> str:
        """Why the balancer leaves it alone; "" when it may move."""
        if self.migrating or self.state is VmState.MIGRATING_FROM:
            return "migrating"
        if self.state is not VmState.UP:
            return str(self.state.value)
        if self.pinned:
            return "pinned"
        return ""


@dataclass(frozen=True)
class HostLoad:
    """A host, what its VMs use, and its VMs."""

    capacity: HostCapacity
    vms: tuple[VmLoad, ...] = ()

    @property
    def name(self) -> str:
        return self.capacity.name

    def used(self, resource: Resource) -> int:
        c = self.capacity
        return c.memory_used_mib if resource is Resource.MEMORY else c.vcpus_used

    def total(self, resource: Resource) -> int:
        c = self.capacity
        return c.memory_total_mib if resource is Resource.MEMORY else c.cpus

    def percent(self, resource: Resource, extra: int = 0) -> float:
        total = self.total(resource)
        if total <= 0:
            return 0.0
        return 100.0 * (self.used(resource) + extra) / total


def over(host: HostLoad, settings: BalanceSettings) -> tuple[Resource, ...]:
    """The resources of host in use over the high threshold."""
    return tuple(r for r in Resource if host.percent(r) > settings.high_percent)


def under(host: HostLoad, settings: BalanceSettings) -> bool:
    """Whether host is below the low threshold in every resource."""
    return all(host.percent(r) < settings.low_percent for r in Resource)


class OverTracker:
    """Since when each host has been seen over the high threshold, without
    a look that found it under in between (in memory: a restarted
    controller starts counting again)."""

    def __init__(self) -> None:
        self._since: dict[str, dt.datetime] = {}

    def observe(
        self, hosts: Iterable[HostLoad], settings: BalanceSettings, now: dt.datetime
    ) -> dict[str, dt.datetime]:
        """Records what hosts are now; returns host id -> first seen over."""
        seen: dict[str, dt.datetime] = {}
        for host in hosts:
            if host.capacity.state is HostState.UP and over(host, settings):
                seen[host.capacity.id] = self._since.get(host.capacity.id, now)
        self._since = seen
        return dict(seen)


@dataclass(frozen=True)
class Move:
    """The one migration the balancer would ask."""

    vm_id: str
    vm_name: str
    source_id: str
    source_name: str
    destination_id: str
    destination_name: str


@dataclass(frozen=True)
class LoadView:
    """A host's load as the decision saw it."""

    host_id: str
    host_name: str
    memory_percent: float
    cpu_percent: float
    # How long it has been over the high threshold; None when it is not.
    over_seconds: float | None


@dataclass(frozen=True)
class Decision:
    """What the balancer does now, and why; move is None for nothing."""

    move: Move | None
    reason: str
    hosts: tuple[LoadView, ...] = ()


def _pct(value: float) -> str:
    return f"{value:.0f}%"


def _over_text(host: HostLoad, resource: Resource, high: int, seconds: float) -> str:
    load = _pct(host.percent(resource))
    return f"{host.name} {resource.value} {load} > {high}% for {seconds:.0f} s"


def _candidates(host: HostLoad, resource: Resource, high: int) -> list[VmLoad]:
    """host's movable VMs in the order to try: the smallest that brings the
    host to high or under, then the others from the largest down."""
    total = host.total(resource)
    excess = host.used(resource) - total * high / 100.0
    movable = [vm for vm in host.vms if not vm.why_not_movable()]
    movable.sort(key=lambda v: (v.size(resource), v.name))
    enough = [vm for vm in movable if vm.size(resource) >= excess]
    short = sorted(
        (vm for vm in movable if vm.size(resource) < excess),
        key=lambda v: (-v.size(resource), v.name),
    )
    return enough + short


@dataclass(frozen=True)
class _Destination:
    host: HostLoad | None
    why_none: str


def _destination(
    vm: VmLoad, targets: Sequence[HostLoad], settings: BalanceSettings, policy: Policy
) -> _Destination:
    """The scheduler's pick among targets (hosts under the low threshold)
    that the VM does not push over the high threshold."""
    fits = [
        t
        for t in targets
        if all(t.percent(r, vm.size(r)) <= settings.high_percent for r in Resource)
    ]
    if not fits:
        return _Destination(None, f"each would go over {settings.high_percent}%")
    placed = place([t.capacity for t in fits], vm.demand, policy)
    if placed.host is None:
        rejected = "; ".join(f"{n}: {w}" for n, w in sorted(placed.rejections.items()))
        return _Destination(None, rejected)
    chosen = next(t for t in fits if t.capacity.id == placed.host.id)
    return _Destination(chosen, "")


def _views(
    hosts: Sequence[HostLoad], since: Mapping[str, dt.datetime], now: dt.datetime
) -> tuple[LoadView, ...]:
    return tuple(
        LoadView(
            h.capacity.id,
            h.name,
            round(h.percent(Resource.MEMORY), 1),
            round(h.percent(Resource.CPU), 1),
            (now - since[h.capacity.id]).total_seconds() if h.capacity.id in since else None,
        )
        for h in sorted(hosts, key=lambda h: h.name)
    )


@dataclass(frozen=True)
class Snapshot:
    """Everything one decision needs."""

    hosts: tuple[HostLoad, ...]
    # Host id -> since when it has been over (OverTracker.observe).
    over_since: Mapping[str, dt.datetime]
    now: dt.datetime
    # The VM of the balancing migration under way, if any.
    balancing_vm: str = ""


def decide(
    snap: Snapshot, settings: BalanceSettings, policy: Policy = Policy.EVEN_SPREAD
) -> Decision:
    """At most one migration that evens the hosts out, with its reason; or
    nothing, with why."""
    views = _views(snap.hosts, snap.over_since, snap.now)
    if snap.balancing_vm:
        return Decision(None, f"a balancing migration is under way: {snap.balancing_vm}", views)
    high, low = settings.high_percent, settings.low_percent
    sources = _sources(snap, settings)
    if not sources:
        return Decision(None, f"no UP host over {high}%", views)
    sustained = [(h, r, s) for h, r, s in sources if s >= settings.sustained_seconds]
    if not sustained:
        h, r, s = sources[0]
        text = _over_text(h, r, high, s)
        return Decision(None, f"{text}, not yet {settings.sustained_seconds:.0f} s", views)
    targets = [h for h in snap.hosts if h.capacity.state is HostState.UP and under(h, settings)]
    if not targets:
        h, r, s = sustained[0]
        return Decision(None, f"{_over_text(h, r, high, s)}; no UP host under {low}%", views)
    notes: list[str] = []
    for source, resource, seconds in sustained:
        found = _move_from(source, resource, targets, settings, policy)
        text = _over_text(source, resource, high, seconds)
        if isinstance(found, str):
            notes.append(f"{text}; {found}")
            continue
        vm, dest = found
        reason = (
            f"{text}; {dest.name} at {_pct(dest.percent(resource))} < {low}%;"
            f" moving {vm.name} ({vm.size(resource)} {_unit(resource)})"
        )
        move = Move(vm.id, vm.name, source.capacity.id, source.name, dest.capacity.id, dest.name)
        return Decision(move, reason, views)
    return Decision(None, "; ".join(notes), views)


def _unit(resource: Resource) -> str:
    return "MiB" if resource is Resource.MEMORY else "vCPUs"


def _sources(snap: Snapshot, settings: BalanceSettings) -> list[tuple[HostLoad, Resource, float]]:
    """The UP hosts over the high threshold, each with its most loaded
    resource and how long it has been over; the most loaded first."""
    found = []
    for host in snap.hosts:
        resources = over(host, settings)
        if host.capacity.state is not HostState.UP or not resources:
            continue
        resource = max(resources, key=host.percent)
        since = snap.over_since.get(host.capacity.id, snap.now)
        found.append((host, resource, (snap.now - since).total_seconds()))
    return sorted(found, key=lambda f: (-f[0].percent(f[1]), f[0].name))


def _move_from(
    source: HostLoad,
    resource: Resource,
    targets: Sequence[HostLoad],
    settings: BalanceSettings,
    policy: Policy,
) -> tuple[VmLoad, HostLoad] | str:
    """The VM to move off source and its destination, or why there is none."""
    candidates = _candidates(source, resource, settings.high_percent)
    if not candidates:
        held = ", ".join(f"{vm.name} ({vm.why_not_movable()})" for vm in source.vms)
        return f"no VM of {source.name} can move: {held or 'it runs none'}"
    misses = []
    for vm in candidates:
        dest = _destination(vm, targets, settings, policy)
        if dest.host is not None:
            return vm, dest.host
        misses.append(f"{vm.name} ({dest.why_none})")
    return f"no UP host under {settings.low_percent}% takes: " + ", ".join(misses)
