"""An in-memory Hypervisor: the seam hostd's VM runner is tested at without libvirt.

It behaves like libvirt's test driver, plus knobs to reproduce what real
hosts do: events delivered before createXML returns, extra events, failures.
"""

from __future__ import annotations

import asyncio
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from hostd import domxml
from hostd.errors import DomainNotFound, DomainStateConflict, HypervisorError
from hostd.hypervisor import (
    DomainState,
    HostCapacity,
    HypervisorEvent,
    LifecycleEvent,
    LifecycleKind,
    OwnedDomain,
    StopReason,
)


@dataclass
class _Domain:
    uuid: str
    name: str
    state: DomainState
    metadata: domxml.HostdMetadata | None


@dataclass
class FakeHypervisor:
    boot_events: tuple[LifecycleKind, ...] = (LifecycleKind.RESUMED, LifecycleKind.STARTED)
    """What a start emits; qemu sends RESUMED and STARTED, before createXML returns."""
    start_error: str | None = None
    domains: dict[str, _Domain] = field(default_factory=dict)
    started_xml: list[str] = field(default_factory=list)
    _queue: asyncio.Queue[HypervisorEvent] = field(default_factory=asyncio.Queue)
    start_gate: asyncio.Event | None = None
    """When set, start_transient waits for it after emitting the boot events."""

    @property
    def pending_events(self) -> int:
        return self._queue.qsize()

    def emit(self, event: HypervisorEvent) -> None:
        self._queue.put_nowait(event)

    async def start_transient(self, xml: str) -> str:
        if self.start_error is not None:
            raise HypervisorError(self.start_error)
        root = ET.fromstring(xml)
        uuid, name = root.findtext("uuid", ""), root.findtext("name", "")
        if uuid in self.domains or any(d.name == name for d in self.domains.values()):
            raise DomainStateConflict(f"domain {name!r} already exists")
        holder = root.find("metadata")
        metadata = None
        if holder is not None and len(holder):
            metadata = domxml.parse_metadata(ET.tostring(holder[0], encoding="unicode"))
        self.domains[uuid] = _Domain(uuid, name, DomainState.RUNNING, metadata)
        self.started_xml.append(xml)
        for kind in self.boot_events:
            self.emit(LifecycleEvent(uuid, kind))
        if self.start_gate is not None:
            await self.start_gate.wait()
        return uuid

    def stop(self, uuid: str, reason: StopReason) -> None:
        """The domain stops by itself (or through another client)."""
        del self.domains[uuid]
        self.emit(LifecycleEvent(uuid, LifecycleKind.STOPPED, reason))

    async def destroy(self, uuid: str) -> None:
        if uuid not in self.domains:
            raise DomainNotFound(uuid)
        self.stop(uuid, StopReason.DESTROYED)

    async def list_owned(self) -> list[OwnedDomain]:
        return [
            OwnedDomain(d.uuid, d.name, d.state, d.metadata)
            for d in self.domains.values()
            if d.metadata is not None
        ]

    async def capacity(self) -> HostCapacity:
        return HostCapacity(hostname="fake", cpus=4, memory_total_mib=8192, memory_free_mib=4096)

    async def events(self) -> AsyncIterator[HypervisorEvent]:
        while True:
            yield await self._queue.get()

    async def close(self) -> None:
        return None
