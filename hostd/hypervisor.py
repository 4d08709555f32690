"""The narrow interface hostd needs from a hypervisor, and the plain values it speaks.

hostd.libvirt_driver implements it with libvirt; tests/hostd run one
contract suite against every implementation. Errors are hostd.errors.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from enum import Enum, auto
from typing import Protocol

from hostd.domxml import HostdMetadata


class DomainState(Enum):
    RUNNING = auto()
    PAUSED = auto()
    SHUTTING_DOWN = auto()
    SHUT_OFF = auto()
    CRASHED = auto()
    OTHER = auto()
    """No state, blocked in the hypervisor, or suspended to RAM."""


class LifecycleKind(Enum):
    STARTED = auto()
    RESUMED = auto()
    SUSPENDED = auto()
    SHUTDOWN = auto()
    """The guest is shutting down, or has finished doing so."""
    STOPPED = auto()
    CRASHED = auto()
    OTHER = auto()
    """Defined, undefined, suspended to RAM: nothing hostd tracks."""


class StopReason(Enum):
    """Why a domain stopped (detail of STOPPED; CRASHED events carry CRASHED)."""

    SHUTDOWN = auto()
    DESTROYED = auto()
    CRASHED = auto()
    MIGRATED = auto()
    SAVED = auto()
    FAILED = auto()
    """The emulator failed."""
    OTHER = auto()


@dataclass(frozen=True)
class LifecycleEvent:
    uuid: str
    kind: LifecycleKind
    reason: StopReason | None = None
    """Set for STOPPED and CRASHED."""


@dataclass(frozen=True)
class EventsLost:
    """Events were dropped (the queue overflowed): whoever tracks state must resync."""

    dropped: int


HypervisorEvent = LifecycleEvent | EventsLost


@dataclass(frozen=True)
class OwnedDomain:
    """A running domain that carries hostd's metadata."""

    uuid: str
    name: str
    state: DomainState
    metadata: HostdMetadata


@dataclass(frozen=True)
class HostCapacity:
    hostname: str
    cpus: int
    memory_total_mib: int
    memory_free_mib: int


class Hypervisor(Protocol):
    async def start_transient(self, xml: str) -> str:
        """Creates and starts a transient domain; returns its UUID."""
        ...

    async def destroy(self, uuid: str) -> None:
        """Powers the domain off at once."""
        ...

    async def list_owned(self) -> list[OwnedDomain]:
        """The active domains carrying hostd's metadata; others are not listed."""
        ...

    async def capacity(self) -> HostCapacity: ...

    def events(self) -> AsyncIterator[HypervisorEvent]:
        """Lifecycle events of every domain, in the order the hypervisor sent them.

        One consumer at a time; events arriving while nobody iterates are buffered
        up to a bound, past which they are dropped and an EventsLost follows.
        """
        ...

    async def close(self) -> None: ...
