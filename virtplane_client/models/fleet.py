"""The hosts VMs run on, affinity groups, ExplainPlacement's verdicts and
ExplainBalancing's dry run."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from virtplane_client.models.enums import BalancingPolicy, HostState, Polarity


@dataclass(frozen=True)
class HostStatus:
    """What is observed about a host: its state, capacity and usage."""

    state: HostState
    message: str = ""
    memory_total_mib: int = 0
    memory_free_mib: int = 0
    cpus: int = 0
    vms_running: int = 0
    hypervisor_type: str = ""
    hostname: str = ""
    last_seen_time: dt.datetime | None = None
    memory_pending_mib: int = 0
    vcpus_used: int = 0


@dataclass(frozen=True)
class Host:
    """A hypervisor host running hostd."""

    id: str
    name: str
    address: str
    status: HostStatus
    cluster_id: str = ""


@dataclass(frozen=True)
class FencedHost:
    """ConfirmHostDown's answer: the host, and the VMs that are DOWN now."""

    host: Host
    vm_ids: tuple[str, ...]


@dataclass(frozen=True)
class AffinityGroup:
    """VMs the scheduler keeps on one host (POSITIVE) or apart (NEGATIVE)."""

    id: str
    name: str
    polarity: Polarity
    enforcing: bool = False  # a hard rule (a filter), not a preference (a weight)
    vm_ids: tuple[str, ...] = ()


@dataclass(frozen=True)
class FilterVerdict:
    filter: str
    passed: bool
    reason: str = ""


@dataclass(frozen=True)
class WeightScore:
    weight: str
    score: float


@dataclass(frozen=True)
class HostPlacement:
    """How the scheduler judges one host for one VM."""

    host_id: str
    host_name: str
    filters: tuple[FilterVerdict, ...]
    eligible: bool
    weights: tuple[WeightScore, ...] = ()
    score: float = 0.0


@dataclass(frozen=True)
class Placement:
    """ExplainPlacement's answer: every host judged, and the one chosen now
    (empty when no host fits)."""

    hosts: tuple[HostPlacement, ...]
    chosen_host_id: str = ""
    chosen_host_name: str = ""


@dataclass(frozen=True)
class BalancingMove:
    """The one migration the balancer would ask."""

    vm_id: str
    vm_name: str
    source_host_id: str
    source_host_name: str
    destination_host_id: str
    destination_host_name: str


@dataclass(frozen=True)
class HostLoad:
    """A host's memory and vCPUs in use, in percent; over_seconds: how long
    it has been over the high threshold (None when it is not)."""

    host_id: str
    host_name: str
    memory_percent: float
    cpu_percent: float
    over_seconds: float | None = None


@dataclass(frozen=True)
class Balancing:
    """ExplainBalancing's answer: the policy and its thresholds, the move
    the balancer would make now (None: none) and why, every host's load."""

    policy: BalancingPolicy
    high_percent: int
    low_percent: int
    sustained_seconds: float
    move: BalancingMove | None
    reason: str
    hosts: tuple[HostLoad, ...] = ()
