from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from controller.scheduler import AffinityRule, Demand, HostCapacity, Policy, choose, place
from db.enums import HostState


def _host(name: str, free: int, state: HostState = HostState.UP, cpus: int = 4) -> HostCapacity:
    return HostCapacity(
        id=name,
        name=name,
        state=state,
        memory_total_mib=4096,
        memory_used_mib=4096 - free,
        cpus=cpus,
    )


def test_picks_the_host_with_most_free_memory() -> None:
    hosts = [_host("a", 1000), _host("b", 3000), _host("c", 2000)]
    assert place(hosts, Demand(vcpus=1, memory_mib=512)).host == hosts[1]


def test_names_the_filter_that_rejected_each_host() -> None:
    hosts = [
        _host("down", 4096, HostState.NON_RESPONSIVE),
        _host("small", 100),
        _host("narrow", 4096, cpus=1),
    ]
    placement = place(hosts, Demand(vcpus=2, memory_mib=512))
    assert placement.host is None
    assert placement.rejections == {
        "down": "host-up: host is NON_RESPONSIVE",
        "small": "memory: needs 512 MiB, 100 MiB free",
        "narrow": "cpus: needs 2 vCPUs, host has 1",
    }


def test_no_hosts_means_no_placement() -> None:
    assert place([], Demand(vcpus=1, memory_mib=1)).host is None


def test_every_host_is_judged_by_every_filter_and_the_eligible_ones_weighed() -> None:
    hosts = [
        _host("maint", 4096, HostState.MAINTENANCE),
        _host("small", 100, cpus=1),
        _host("fits", 2048),
    ]
    placement = place(hosts, Demand(vcpus=2, memory_mib=512))
    maint, small, fits = placement.judgements
    assert [(v.filter, v.passed) for v in maint.verdicts] == [
        ("source", True),
        ("tried", True),
        ("maintenance", False),
        ("host-up", False),
        ("pinned-host", True),
        ("memory", True),
        ("cpus", True),
        ("affinity", True),
    ]
    assert maint.scores == ()
    assert [v.reason for v in small.verdicts if not v.passed] == [
        "needs 512 MiB, 100 MiB free",
        "needs 2 vCPUs, host has 1",
    ]
    assert fits.eligible
    # 512 of 4096 MiB used before, 1024 after; 2 of 4 vCPUs.
    assert fits.scores == (("memory-free", 0.375), ("cpu-free", 0.5), ("affinity", 0.0))
    assert placement.host == hosts[2]
    # StartVm's error names the first filter that rejected each host.
    assert placement.rejections == {
        "maint": "maintenance: host is in maintenance",
        "small": "memory: needs 512 MiB, 100 MiB free",
    }


def _rule(group: str, positive: bool, enforcing: bool, *peers: str) -> AffinityRule:
    return AffinityRule(group, positive, enforcing, frozenset(peers))


def test_spread_weighs_free_cpus_as_well_as_memory() -> None:
    busy = HostCapacity("busy", "busy", HostState.UP, 4096, 1024, cpus=4, vcpus_used=4)
    idle = HostCapacity("idle", "idle", HostState.UP, 4096, 1536, cpus=4, vcpus_used=0)
    assert place([busy, idle], Demand(vcpus=1, memory_mib=256)).host == idle


def test_power_saving_packs_onto_the_fullest_host_that_fits() -> None:
    hosts = [_host("empty", 4096), _host("half", 2048), _host("full", 200)]
    demand = Demand(vcpus=1, memory_mib=512)
    assert place(hosts, demand).host == hosts[0]
    packed = place(hosts, demand, Policy.POWER_SAVING)
    assert packed.host == hosts[1]
    assert packed.rejections == {"full": "memory: needs 512 MiB, 200 MiB free"}
    assert [name for name, _ in packed.judgements[1].scores] == [
        "memory-used",
        "cpu-used",
        "affinity",
    ]


def test_a_pinned_vm_goes_only_to_its_host() -> None:
    hosts = [_host("a", 4096), _host("b", 1024)]
    placement = place(hosts, Demand(vcpus=1, memory_mib=512, pinned_host_id="b"))
    assert placement.host == hosts[1]
    assert placement.rejections == {"a": "pinned-host: the VM is pinned to another host"}


def test_a_start_never_tries_the_same_host_twice() -> None:
    hosts = [_host("a", 4096), _host("b", 1024)]
    placement = place(hosts, Demand(vcpus=1, memory_mib=512, tried={"a": "boom"}))
    assert placement.host == hosts[1]
    assert placement.rejections == {"a": "tried: this start failed there already (boom)"}


def test_enforcing_positive_affinity_keeps_the_vm_with_its_group() -> None:
    hosts = [_host("a", 4096), _host("b", 1024), _host("c", 3000)]
    rule = _rule("web", True, True, "b")
    placement = place(hosts, Demand(vcpus=1, memory_mib=512, affinity=(rule,)))
    assert placement.host == hosts[1]
    assert placement.rejections["a"] == (
        "affinity: positive group 'web': its other VMs run on another host"
    )


def test_enforcing_negative_affinity_keeps_the_vm_apart() -> None:
    hosts = [_host("a", 4096), _host("b", 1024)]
    rule = _rule("db", False, True, "a")
    placement = place(hosts, Demand(vcpus=1, memory_mib=512, affinity=(rule,)))
    assert placement.host == hosts[1]
    assert placement.rejections == {
        "a": "affinity: negative group 'db': another of its VMs runs here"
    }
    # With its peers on every host, nothing fits, and the error says why.
    both = _rule("db", False, True, "a", "b")
    assert place(hosts, Demand(vcpus=1, memory_mib=512, affinity=(both,))).host is None


def test_a_group_with_no_running_peers_constrains_nothing() -> None:
    hosts = [_host("a", 4096), _host("b", 1024)]
    rule = _rule("web", True, True)
    assert place(hosts, Demand(vcpus=1, memory_mib=512, affinity=(rule,))).host == hosts[0]


def test_soft_affinity_only_weighs_and_outweighs_load() -> None:
    hosts = [_host("a", 4096), _host("b", 1024)]
    together = _rule("cache", True, False, "b")
    placement = place(hosts, Demand(vcpus=1, memory_mib=512, affinity=(together,)))
    assert placement.host == hosts[1]
    assert placement.rejections == {}
    apart = _rule("cache", False, False, "a")
    assert place(hosts, Demand(vcpus=1, memory_mib=512, affinity=(apart,))).host == hosts[1]
    # A soft rule yields when the only host it allows does not fit.
    full = [_host("a", 4096), _host("b", 100)]
    assert place(full, Demand(vcpus=1, memory_mib=512, affinity=(together,))).host == full[0]


_STATES = [HostState.UP, HostState.MAINTENANCE, HostState.NON_RESPONSIVE]


@settings(max_examples=300, deadline=None)
@given(
    hosts=st.lists(
        st.tuples(
            st.integers(0, 4096), st.sampled_from(_STATES), st.integers(1, 8), st.integers(0, 16)
        ),
        max_size=12,
    ),
    memory=st.integers(1, 4096),
    vcpus=st.integers(1, 8),
    policy=st.sampled_from(list(Policy)),
    tried=st.sets(st.integers(0, 11), max_size=3),
)
def test_choose_picks_the_host_place_picks(
    hosts: list[tuple[int, HostState, int, int]],
    memory: int,
    vcpus: int,
    policy: Policy,
    tried: set[int],
) -> None:
    capacities = [
        HostCapacity(
            id=f"h{i}",
            name=f"h{i}",
            state=state,
            memory_total_mib=4096,
            memory_used_mib=4096 - free,
            cpus=cpus,
            vcpus_used=used,
        )
        for i, (free, state, cpus, used) in enumerate(hosts)
    ]
    demand = Demand(vcpus=vcpus, memory_mib=memory, tried={f"h{i}": "refused" for i in tried})
    assert choose(capacities, demand, policy) == place(capacities, demand, policy).host
