"""Choosing a host for a VM: filters reject hosts, weights rank the rest.

Pure functions over a snapshot of the hosts; the caller books the chosen
host in the same transaction, so concurrent starts cannot over-book it.

Filters, in order: a migration's source, a host this start tried already
(never the same host twice), maintenance, host up, pinned host, free memory, vCPUs, and the
enforcing affinity groups. Weights depend on the policy: even spread
(prefer the host with the most memory and vCPUs left free) or power saving
(prefer the fullest host that fits, so that others can be emptied and
switched off). Non-enforcing affinity groups add a weight of their own, large
enough to outweigh load.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from db.enums import HostState


class Policy(enum.Enum):
    EVEN_SPREAD = "even_spread"
    POWER_SAVING = "power_saving"


@dataclass(frozen=True)
class HostCapacity:
    """A host as the scheduler sees it; used counts pending starts."""

    id: str
    name: str
    state: HostState
    memory_total_mib: int
    memory_used_mib: int
    cpus: int
    vcpus_used: int = 0

    @property
    def memory_free_mib(self) -> int:
        return self.memory_total_mib - self.memory_used_mib


@dataclass(frozen=True)
class AffinityRule:
    """One affinity group of the VM, and the hosts its other members are on."""

    group: str
    positive: bool
    enforcing: bool
    peer_hosts: frozenset[str]  # host ids


@dataclass(frozen=True)
class Demand:
    """What the VM asks of a host, and where it may or may not go."""

    vcpus: int
    memory_mib: int
    pinned_host_id: str | None = None
    affinity: tuple[AffinityRule, ...] = ()
    # Hosts this start tried already, by id, with why each failed.
    tried: Mapping[str, str] = field(default_factory=dict)
    # A migration's source: the host the VM runs on.
    source_host_id: str | None = None


# A filter returns None to accept the host, or why it rejects it.
Filter = Callable[[HostCapacity, Demand], str | None]


def not_source(host: HostCapacity, demand: Demand) -> str | None:
    if host.id == demand.source_host_id:
        return "the VM runs there (the migration's source)"
    return None


def not_tried(host: HostCapacity, demand: Demand) -> str | None:
    if host.id in demand.tried:
        return f"this start failed there already ({demand.tried[host.id]})"
    return None


def not_in_maintenance(host: HostCapacity, _demand: Demand) -> str | None:
    if host.state in (HostState.MAINTENANCE, HostState.PREPARING_FOR_MAINTENANCE):
        return "host is in maintenance"
    return None


def host_is_up(host: HostCapacity, _demand: Demand) -> str | None:
    return None if host.state is HostState.UP else f"host is {host.state.value}"


def pinned_host(host: HostCapacity, demand: Demand) -> str | None:
    if demand.pinned_host_id is None or demand.pinned_host_id == host.id:
        return None
    return "the VM is pinned to another host"


def enough_memory(host: HostCapacity, demand: Demand) -> str | None:
    if host.memory_free_mib >= demand.memory_mib:
        return None
    return f"needs {demand.memory_mib} MiB, {host.memory_free_mib} MiB free"


def enough_cpus(host: HostCapacity, demand: Demand) -> str | None:
    if host.cpus >= demand.vcpus:
        return None
    return f"needs {demand.vcpus} vCPUs, host has {host.cpus}"


def affinity(host: HostCapacity, demand: Demand) -> str | None:
    for rule in demand.affinity:
        if not rule.enforcing or not rule.peer_hosts:
            continue
        if rule.positive and host.id not in rule.peer_hosts:
            return f"positive group {rule.group!r}: its other VMs run on another host"
        if not rule.positive and host.id in rule.peer_hosts:
            return f"negative group {rule.group!r}: another of its VMs runs here"
    return None


FILTERS: tuple[tuple[str, Filter], ...] = (
    ("source", not_source),
    ("tried", not_tried),
    ("maintenance", not_in_maintenance),
    ("host-up", host_is_up),
    ("pinned-host", pinned_host),
    ("memory", enough_memory),
    ("cpus", enough_cpus),
    ("affinity", affinity),
)

# A weight scores a host every filter accepted; the highest total wins.
Weight = Callable[[HostCapacity, Demand], float]

# A soft affinity group outweighs any difference of load (at most 2).
SOFT_AFFINITY_WEIGHT = 10.0


def _memory_after(host: HostCapacity, demand: Demand) -> float:
    """The share of the host's memory in use once the VM runs there."""
    if host.memory_total_mib <= 0:
        return 1.0
    return min(1.0, (host.memory_used_mib + demand.memory_mib) / host.memory_total_mib)


def _vcpus_after(host: HostCapacity, demand: Demand) -> float:
    """The host's vCPU load per CPU once the VM runs there, at most 1."""
    if host.cpus <= 0:
        return 1.0
    return min(1.0, (host.vcpus_used + demand.vcpus) / host.cpus)


def memory_free(host: HostCapacity, demand: Demand) -> float:
    """Spreads VMs: the more memory left free, the better (0 … 1)."""
    return round(1.0 - _memory_after(host, demand), 6)


def cpu_free(host: HostCapacity, demand: Demand) -> float:
    """Spreads VMs: the fewer vCPUs per CPU, the better (0 … 1)."""
    return round(1.0 - _vcpus_after(host, demand), 6)


def memory_used(host: HostCapacity, demand: Demand) -> float:
    """Packs VMs: the fuller the host's memory, the better (0 … 1)."""
    return round(_memory_after(host, demand), 6)


def cpu_used(host: HostCapacity, demand: Demand) -> float:
    """Packs VMs: the more vCPUs per CPU, the better (0 … 1)."""
    return round(_vcpus_after(host, demand), 6)


def soft_affinity(host: HostCapacity, demand: Demand) -> float:
    """Non-enforcing groups: towards the peers of a positive group, away from
    those of a negative one."""
    score = 0.0
    for rule in demand.affinity:
        if rule.enforcing or host.id not in rule.peer_hosts:
            continue
        score += SOFT_AFFINITY_WEIGHT if rule.positive else -SOFT_AFFINITY_WEIGHT
    return score


WEIGHTS: dict[Policy, tuple[tuple[str, Weight], ...]] = {
    Policy.EVEN_SPREAD: (
        ("memory-free", memory_free),
        ("cpu-free", cpu_free),
        ("affinity", soft_affinity),
    ),
    Policy.POWER_SAVING: (
        ("memory-used", memory_used),
        ("cpu-used", cpu_used),
        ("affinity", soft_affinity),
    ),
}


@dataclass(frozen=True)
class Verdict:
    """One filter's judgement of one host; reason is None when it passed."""

    filter: str
    reason: str | None

    @property
    def passed(self) -> bool:
        return self.reason is None


@dataclass(frozen=True)
class HostJudgement:
    """How the scheduler judges one host: every filter's verdict and, when
    they all pass, every weight's score."""

    host: HostCapacity
    verdicts: tuple[Verdict, ...]
    scores: tuple[tuple[str, float], ...]

    @property
    def eligible(self) -> bool:
        return all(v.passed for v in self.verdicts)

    @property
    def score(self) -> float:
        return sum(score for _, score in self.scores)

    @property
    def rejection(self) -> str | None:
        """The first rejecting filter and its reason, as "filter: reason"."""
        first = next((v for v in self.verdicts if not v.passed), None)
        return None if first is None else f"{first.filter}: {first.reason}"


def judge(host: HostCapacity, demand: Demand, policy: Policy = Policy.EVEN_SPREAD) -> HostJudgement:
    verdicts = tuple(Verdict(name, check(host, demand)) for name, check in FILTERS)
    scores: tuple[tuple[str, float], ...] = ()
    if all(v.passed for v in verdicts):
        scores = tuple((name, weigh(host, demand)) for name, weigh in WEIGHTS[policy])
    return HostJudgement(host, verdicts, scores)


@dataclass(frozen=True)
class Placement:
    host: HostCapacity | None
    rejections: dict[str, str]  # host name -> "filter: reason"
    judgements: tuple[HostJudgement, ...] = ()
    policy: Policy = Policy.EVEN_SPREAD


def place(
    hosts: Sequence[HostCapacity], demand: Demand, policy: Policy = Policy.EVEN_SPREAD
) -> Placement:
    """Judges every host and picks the eligible one with the highest score
    (ties go to the name sorting last). StartVm and ExplainPlacement both
    come here."""
    judgements = tuple(judge(h, demand, policy) for h in hosts)
    rejections = {j.host.name: j.rejection for j in judgements if j.rejection is not None}
    best = max(
        (j for j in judgements if j.eligible),
        key=lambda j: (j.score, j.host.name),
        default=None,
    )
    return Placement(
        host=None if best is None else best.host,
        rejections=rejections,
        judgements=judgements,
        policy=policy,
    )


def choose(
    hosts: Sequence[HostCapacity], demand: Demand, policy: Policy = Policy.EVEN_SPREAD
) -> HostCapacity | None:
    """The host place() picks, without its explanation: a host's filters
    stop at the first that rejects it, and no judgement is kept. A start
    books with this (the hosts locked meanwhile); place() says why when it
    finds none."""
    weights = WEIGHTS[policy]
    best: HostCapacity | None = None
    best_key: tuple[float, str] | None = None
    for host in hosts:
        if any(check(host, demand) is not None for _, check in FILTERS):
            continue
        key = (sum(weigh(host, demand) for _, weigh in weights), host.name)
        if best_key is None or key > best_key:
            best, best_key = host, key
    return best
