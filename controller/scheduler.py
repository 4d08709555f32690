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
    ("host-up", host_is_up),
    ("memory", enough_memory),
    ("cpus", enough_cpus),
)


@dataclass(frozen=True)
class Placement:
    host: HostCapacity | None
    rejections: dict[str, str]  # host name -> "filter: reason"


def place(hosts: Sequence[HostCapacity], demand: Demand) -> Placement:
    """Picks the host with the most free memory among those every filter accepts."""
    rejections: dict[str, str] = {}
    fits: list[HostCapacity] = []
    for host in hosts:
        for name, check in FILTERS:
            reason = check(host, demand)
            if reason is not None:
                rejections[host.name] = f"{name}: {reason}"
                break
        else:
            fits.append(host)
    best = max(fits, key=lambda h: (h.memory_free_mib, h.name), default=None)
    return Placement(host=best, rejections=rejections)
