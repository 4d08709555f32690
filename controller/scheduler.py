"""Choosing a host for a VM: filters reject hosts, a weight ranks the rest.

Pure functions over a snapshot of the hosts; the caller books the chosen
host in the same transaction, so concurrent starts cannot over-book it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from db.enums import HostState


@dataclass(frozen=True)
class HostCapacity:
    """A host as the scheduler sees it; used counts pending starts."""

    id: str
    name: str
    state: HostState
    memory_total_mib: int
    memory_used_mib: int
    cpus: int

    @property
    def memory_free_mib(self) -> int:
        return self.memory_total_mib - self.memory_used_mib


@dataclass(frozen=True)
class Demand:
    vcpus: int
    memory_mib: int


# A filter returns None to accept the host, or why it rejects it.
Filter = Callable[[HostCapacity, Demand], str | None]


def not_in_maintenance(host: HostCapacity, _demand: Demand) -> str | None:
    if host.state in (HostState.MAINTENANCE, HostState.PREPARING_FOR_MAINTENANCE):
        return "host is in maintenance"
    return None


def host_is_up(host: HostCapacity, _demand: Demand) -> str | None:
    return None if host.state is HostState.UP else f"host is {host.state.value}"


def enough_memory(host: HostCapacity, demand: Demand) -> str | None:
    if host.memory_free_mib >= demand.memory_mib:
        return None
    return f"needs {demand.memory_mib} MiB, {host.memory_free_mib} MiB free"


def enough_cpus(host: HostCapacity, demand: Demand) -> str | None:
    if host.cpus >= demand.vcpus:
        return None
    return f"needs {demand.vcpus} vCPUs, host has {host.cpus}"


FILTERS: tuple[tuple[str, Filter], ...] = (
    ("maintenance", not_in_maintenance),
    ("host-up", host_is_up),
    ("memory", enough_memory),
    ("cpus", enough_cpus),
)

# A weight scores a host every filter accepted; the highest total wins.
Weight = Callable[[HostCapacity, Demand], float]


def memory_free(host: HostCapacity, _demand: Demand) -> float:
    """Spreads VMs: the more memory left free, the better."""
    return float(host.memory_free_mib)


WEIGHTS: tuple[tuple[str, Weight], ...] = (("memory-free", memory_free),)


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


def judge(host: HostCapacity, demand: Demand) -> HostJudgement:
    verdicts = tuple(Verdict(name, check(host, demand)) for name, check in FILTERS)
    scores: tuple[tuple[str, float], ...] = ()
    if all(v.passed for v in verdicts):
        scores = tuple((name, weigh(host, demand)) for name, weigh in WEIGHTS)
    return HostJudgement(host, verdicts, scores)


@dataclass(frozen=True)
class Placement:
    host: HostCapacity | None
    rejections: dict[str, str]  # host name -> "filter: reason"
    judgements: tuple[HostJudgement, ...] = ()


def place(hosts: Sequence[HostCapacity], demand: Demand) -> Placement:
    """Judges every host and picks the eligible one with the highest score
    (ties go to the name sorting last). StartVm and ExplainPlacement both
    come here."""
    judgements = tuple(judge(h, demand) for h in hosts)
    rejections = {j.host.name: j.rejection for j in judgements if j.rejection is not None}
    best = max(
        (j for j in judgements if j.eligible),
        key=lambda j: (j.score, j.host.name),
        default=None,
    )
    return Placement(
        host=None if best is None else best.host, rejections=rejections, judgements=judgements
    )
