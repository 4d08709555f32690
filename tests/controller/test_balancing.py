"""Balancing's rules (controller.balancing), pure: which host is a source
(over the high threshold for the sustained time, UP), which VM leaves it
(movable, the smallest that is enough, else the largest), where it goes
(the scheduler's filters and weights over the hosts under the low
threshold), and the reason of every answer. Over rows and the loop:
tests/controller/test_balancing_loop.py."""

from __future__ import annotations

import datetime as dt

import pytest

from controller.balancing import (
    BalanceSettings,
    Decision,
    HostLoad,
    OverTracker,
    Snapshot,
    VmLoad,
    decide,
)
from controller.scheduler import AffinityRule, Demand, HostCapacity
from db.enums import HostState, VmState

T0 = dt.datetime(2026, 12, 1, 12, 0, tzinfo=dt.UTC)
SETTINGS = BalanceSettings(high_percent=80, low_percent=40, sustained_seconds=300)


def vm(
    name: str,
    memory: int,
    *,
    host: str = "h1",
    vcpus: int = 1,
    state: VmState = VmState.UP,
    pinned: bool = False,
    migrating: bool = False,
    affinity: tuple[AffinityRule, ...] = (),
) -> VmLoad:
    demand = Demand(
        vcpus=vcpus,
        memory_mib=memory,
        pinned_host_id=f"id-{host}" if pinned else None,
        affinity=affinity,
        source_host_id=f"id-{host}",
    )
    return VmLoad(f"id-{name}", name, state, pinned, migrating, demand)


def host(
    name: str,
    memory: int,
    *vms: VmLoad,
    cpus: int = 16,
    state: HostState = HostState.UP,
) -> HostLoad:
    """A host whose usage is what its VMs book."""
    capacity = HostCapacity(
        id=f"id-{name}",
        name=name,
        state=state,
        memory_total_mib=memory,
        memory_used_mib=sum(v.demand.memory_mib for v in vms),
        cpus=cpus,
        vcpus_used=sum(v.demand.vcpus for v in vms),
    )
    return HostLoad(capacity, vms)


def busy_h1(*extra: VmLoad) -> HostLoad:
    """h1 at 91% of its memory: to be at 80% it must shed 1100 MiB."""
    return host(
        "h1",
        10000,
        vm("a", 4000),
        vm("b", 2000),
        vm("c", 1500),
        vm("d", 1000),
        vm("e", 600),
        *extra,
    )


def idle(name: str, memory: int = 10000, used: int = 2000) -> HostLoad:
    return host(name, memory, vm(f"{name}-x", used, host=name))


def _decide(*hosts: HostLoad, over_for: float = 300, balancing: str = "") -> Decision:
    """What decide() answers over_for seconds after hosts were first seen so."""
    since = OverTracker().observe(hosts, SETTINGS, T0)
    now = T0 + dt.timedelta(seconds=over_for)
    snap = Snapshot(tuple(hosts), since, now, balancing)
    return decide(snap, SETTINGS)


def test_nothing_to_do_while_no_host_is_over_the_high_threshold() -> None:
    decision = _decide(host("h1", 10000, vm("a", 8000)), idle("h2"))
    assert decision.move is None
    assert decision.reason == "no UP host over 80%"


def test_a_host_over_for_less_than_the_sustained_time_is_left_alone() -> None:
    decision = _decide(busy_h1(), idle("h2"), over_for=120)
    assert decision.move is None
    assert decision.reason == "h1 memory 91% > 80% for 120 s, not yet 300 s"


def test_the_smallest_vm_that_brings_the_host_under_moves_to_a_host_under_the_low() -> None:
    decision = _decide(busy_h1(), idle("h2"))
    assert decision.move is not None
    assert (decision.move.vm_name, decision.move.source_name) == ("c", "h1")
    assert decision.move.destination_name == "h2"
    assert decision.reason == "h1 memory 91% > 80% for 300 s; h2 at 20% < 40%; moving c (1500 MiB)"
    views = {v.host_name: v for v in decision.hosts}
    assert (views["h1"].memory_percent, views["h1"].over_seconds) == (91.0, 300.0)
    assert (views["h2"].memory_percent, views["h2"].over_seconds) == (20.0, None)


def test_without_a_vm_big_enough_the_largest_moves() -> None:
    h1 = host("h1", 10000, *(vm(n, 1000) for n in "abcdefghi"), vm("big", 1200))  # 2200 too many
    decision = _decide(h1, idle("h2"))
    assert decision.move is not None and decision.move.vm_name == "big"


def test_pinned_and_migrating_vms_stay() -> None:
    h1 = host(
        "h1",
        10000,
        vm("a", 4000),
        vm("c", 1500, pinned=True),
        vm("d", 2000, migrating=True),
        vm("e", 1200, state=VmState.MIGRATING_FROM),
        vm("f", 400, state=VmState.PAUSED),
    )
    decision = _decide(h1, idle("h2"))
    assert decision.move is not None and decision.move.vm_name == "a"
    stuck = host("h1", 1000, vm("p", 600, pinned=True), vm("m", 300, migrating=True))
    decision = _decide(stuck, idle("h2"))
    assert decision.move is None
    assert decision.reason == (
        "h1 memory 90% > 80% for 300 s; no VM of h1 can move: p (pinned), m (migrating)"
    )


def test_hosts_in_maintenance_are_neither_source_nor_destination() -> None:
    preparing = host("h1", 10000, vm("a", 9000), state=HostState.PREPARING_FOR_MAINTENANCE)
    assert _decide(preparing, idle("h2")).reason == "no UP host over 80%"
    resting = host("h2", 10000, state=HostState.MAINTENANCE)
    decision = _decide(busy_h1(), resting)
    assert decision.move is None
    assert decision.reason == "h1 memory 91% > 80% for 300 s; no UP host under 40%"


def test_only_a_host_under_the_low_threshold_takes_a_vm() -> None:
    decision = _decide(busy_h1(), idle("h2", used=5000), idle("h3", used=3000))
    assert decision.move is not None and decision.move.destination_name == "h3"
    decision = _decide(busy_h1(), idle("h2", used=5000))
    assert decision.move is None
    assert decision.reason == "h1 memory 91% > 80% for 300 s; no UP host under 40%"


def test_a_move_that_would_put_the_destination_over_the_high_threshold_is_not_made() -> None:
    small = idle("h2", memory=2000, used=100)  # 5%; c would make it 80%, b 105%
    decision = _decide(busy_h1(), small)
    assert decision.move is not None and decision.move.vm_name == "c"
    tiny = idle("h2", memory=1000, used=100)
    decision = _decide(host("h1", 10000, vm("a", 9000)), tiny)
    assert decision.move is None
    assert decision.reason == (
        "h1 memory 90% > 80% for 300 s; no UP host under 40% takes: a (each would go over 80%)"
    )


def test_affinity_is_respected_through_the_scheduler() -> None:
    """c may not join its negative group's peer on h2 (the emptier host):
    it goes to h3; with h2 the only host under the low, d moves instead."""
    apart = AffinityRule("apart", positive=False, enforcing=True, peer_hosts=frozenset({"id-h2"}))
    h1 = host(
        "h1", 10000, vm("a", 4000), vm("b", 2000), vm("c", 1500, affinity=(apart,)), vm("d", 1000),
        vm("e", 600),
    )  # fmt: skip
    decision = _decide(h1, idle("h2", used=1000), idle("h3", used=3000))
    assert decision.move is not None
    assert (decision.move.vm_name, decision.move.destination_name) == ("c", "h3")
    decision = _decide(h1, idle("h2", used=1000))
    assert decision.move is not None
    assert (decision.move.vm_name, decision.move.destination_name) == ("b", "h2")


def test_vcpus_over_the_threshold_count_as_over() -> None:
    h1 = host("h1", 100000, vm("a", 100, vcpus=4), vm("b", 100, vcpus=3), vm("c", 100, vcpus=2),
              cpus=10)  # fmt: skip
    decision = _decide(h1, idle("h2"))
    assert decision.move is not None and decision.move.vm_name == "c"
    assert decision.reason == "h1 cpu 90% > 80% for 300 s; h2 at 6% < 40%; moving c (2 vCPUs)"


def test_one_balancing_migration_at_a_time() -> None:
    decision = _decide(busy_h1(), idle("h2"), balancing="x")
    assert decision.move is None
    assert decision.reason == "a balancing migration is under way: x"


def test_the_tracker_counts_from_the_first_look_over_and_restarts_after_a_dip() -> None:
    tracker = OverTracker()
    later = T0 + dt.timedelta(seconds=200)
    assert tracker.observe([busy_h1(), idle("h2")], SETTINGS, T0) == {"id-h1": T0}
    assert tracker.observe([busy_h1()], SETTINGS, later) == {"id-h1": T0}
    assert tracker.observe([idle("h1")], SETTINGS, later) == {}
    assert tracker.observe([busy_h1()], SETTINGS, later) == {"id-h1": later}
    preparing = host("h1", 1000, vm("a", 900), state=HostState.PREPARING_FOR_MAINTENANCE)
    assert tracker.observe([preparing], SETTINGS, later) == {}


@pytest.mark.parametrize(("high", "low"), [(80, 80), (40, 80), (120, 40), (80, -1)])
def test_thresholds_must_make_sense(high: int, low: int) -> None:
    with pytest.raises(ValueError, match="thresholds"):
        BalanceSettings(high_percent=high, low_percent=low)
