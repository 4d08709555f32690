from __future__ import annotations

from controller.scheduler import Demand, HostCapacity, place
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
        ("maintenance", False),
        ("host-up", False),
        ("memory", True),
        ("cpus", True),
    ]
    assert maint.scores == ()
    assert [v.reason for v in small.verdicts if not v.passed] == [
        "needs 512 MiB, 100 MiB free",
        "needs 2 vCPUs, host has 1",
    ]
    assert fits.eligible
    assert fits.scores == (("memory-free", 2048.0),)
    assert placement.host == hosts[2]
    # StartVm's error names the first filter that rejected each host.
    assert placement.rejections == {
        "maint": "maintenance: host is in maintenance",
        "small": "memory: needs 512 MiB, 100 MiB free",
    }
