"""An in-memory Hypervisor: the seam hostd's VM service is tested at without libvirt.

It behaves as libvirt does with QEMU (as measured, ../shared/GUEST.md and
hostd's tests on qemu:///system), plus knobs to reproduce what real hosts
do: events delivered before a call returns, guests that ignore ACPI, saves
that hang or fail, and a host whose hypervisor offers no display.
"""

from __future__ import annotations

import asyncio
import os
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from hostd import domxml
from hostd.errors import (
    DomainAlreadyExists,
    DomainNotFound,
    DomainStateConflict,
    HypervisorError,
    HypervisorUnavailable,
    JobAborted,
    OperationUnsupported,
)
from hostd.hypervisor import (
    DomainAction,
    DomainInfo,
    DomainState,
    DomainStats,
    HostInfo,
    HypervisorEvent,
    JobProgress,
    LifecycleEvent,
    LifecycleKind,
    MigrationTarget,
    StopReason,
)

COMPLETE = b"FAKE-SAVE-COMPLETE\n"
PARTIAL = b"FAKE-SAVE-PARTIAL\n"
K = LifecycleKind


@dataclass
class FakeDomain:
    uuid: str
    name: str
    xml: str
    state: DomainState = DomainState.RUNNING
    active: bool = True
    persistent: bool = False
    saving: bool = False
    starting: bool = False
    cpu_time_ns: int = 0
    stop_reason: StopReason | None = None

    @property
    def metadata(self) -> domxml.HostdMetadata | None:
        return domxml.metadata_in_domain(self.xml)


@dataclass
class FakeHypervisor:
    boot_events: tuple[LifecycleKind, ...] = (K.RESUMED, K.STARTED)
    """What a start emits; QEMU sends RESUMED and STARTED before createXML returns."""
    start_error: str | None = None
    start_gate: asyncio.Event | None = None
    """When set, start waits for it after emitting the boot events."""
    ignores_acpi: bool = False
    """The guest does nothing on the power button: shutdown and reboot have no effect."""
    reboot_resets: int = 3
    """Resets one reboot emits: the firmware resets again after the guest."""
    save_gate: asyncio.Event | None = None
    """When set, a save waits for it, paused, its file still partial."""
    save_error: str | None = None
    graphics: frozenset[str] = frozenset({"vnc"})
    migrate_gate: asyncio.Event | None = None
    """When set, a migration is under way until it is set (then it fails: the fake
    cannot migrate) or the job is aborted."""
    restore_lost: str | None = None
    """"before" or "after": the connection is lost during a restore, before or after
    the domain runs from its image; the call fails HypervisorUnavailable."""
    unreachable: bool = False
    """list_domains fails HypervisorUnavailable, as while libvirtd is away."""
    domains: dict[str, FakeDomain] = field(default_factory=dict)
    started_xml: list[str] = field(default_factory=list)
    migration_targets: list[MigrationTarget] = field(default_factory=list)
    """Where each migration asked of the fake was to go."""
    job_remaining: int = 0
    """The data remaining a migration under way reports, sample after sample."""
    post_copy_started: list[str] = field(default_factory=list)
    """The domains whose migration was switched to post-copy."""
    _queue: asyncio.Queue[HypervisorEvent] = field(default_factory=asyncio.Queue)
    _jobs: dict[str, asyncio.Event] = field(default_factory=dict)
    """Migrations under way, each with its abort."""

    @property
    def pending_events(self) -> int:
        return self._queue.qsize()

    def migrating(self, uuid: str) -> bool:
        """Whether a migration of the domain is under way (held by migrate_gate)."""
        return uuid in self._jobs

    def forget_events(self) -> None:
        """Drops what is queued: events sent while no hostd was connected."""
        while not self._queue.empty():
            self._queue.get_nowait()

    def emit(self, event: HypervisorEvent) -> None:
        self._queue.put_nowait(event)

    def _emit(self, uuid: str, *kinds: LifecycleKind, reason: StopReason | None = None) -> None:
        for kind in kinds:
            self.emit(LifecycleEvent(uuid, kind, reason))

    def _active(self, uuid: str) -> FakeDomain:
        domain = self.domains.get(uuid)
        if domain is None:
            raise DomainNotFound(uuid)
        if not domain.active:
            raise DomainStateConflict("domain is not running")
        return domain

    # -- running and stopping

    async def start(self, xml: str, *, persistent: bool, paused: bool) -> str:
        if self.start_error is not None:
            raise HypervisorError(self.start_error)
        root = ET.fromstring(xml)
        uuid, name = root.findtext("uuid", ""), root.findtext("name", "")
        if uuid in self.domains:
            raise (DomainAlreadyExists if persistent else DomainStateConflict)(
                f"domain {name!r} already exists"
            )
        if any(d.name == name for d in self.domains.values()):
            raise DomainStateConflict(f"domain {name!r} already exists")
        state = DomainState.PAUSED if paused else DomainState.RUNNING
        self.domains[uuid] = FakeDomain(uuid, name, xml, state, persistent=persistent)
        self.started_xml.append(xml)
        self._emit(uuid, *((K.STARTED, K.SUSPENDED) if paused else self.boot_events))
        if self.start_gate is not None:
            await self.start_gate.wait()
        return uuid

    def define(self, xml: str) -> str:
        """Defines a domain without starting it: what a create killed between
        defineXML and create leaves."""
        root = ET.fromstring(xml)
        uuid, name = root.findtext("uuid", ""), root.findtext("name", "")
        self.domains[uuid] = FakeDomain(
            uuid, name, xml, DomainState.SHUT_OFF, active=False, persistent=True
        )
        return uuid

    def stop(self, uuid: str, reason: StopReason) -> None:
        """The domain stops by itself (or through another client)."""
        domain = self.domains[uuid]
        if domain.persistent:
            domain.active, domain.state = False, DomainState.SHUT_OFF
            domain.stop_reason = reason
        else:
            del self.domains[uuid]
        self._emit(uuid, K.STOPPED, reason=reason)

    async def act(self, uuid: str, action: DomainAction) -> None:
        if action is DomainAction.UNDEFINE:
            self._undefine(uuid)
            return
        domain = self._active(uuid)
        if action in (DomainAction.ABORT_JOB, DomainAction.START_POST_COPY):
            if uuid not in self._jobs:
                raise DomainStateConflict("no job is active on the domain")
            if action is DomainAction.ABORT_JOB:
                self._jobs[uuid].set()
            else:
                self.post_copy_started.append(uuid)
            return
        if action is DomainAction.DESTROY:
            self.stop(uuid, StopReason.DESTROYED)
        elif action is DomainAction.PAUSE:
            domain.state = DomainState.PAUSED
            self._emit(uuid, K.SUSPENDED)
        elif action is DomainAction.RESUME:
            if domain.state is not DomainState.PAUSED:
                raise DomainStateConflict("domain is not paused")
            domain.state = DomainState.RUNNING
            self._emit(uuid, K.RESUMED)
        elif action is DomainAction.RESET:
            self._emit(uuid, K.REBOOTED)
        elif not self.ignores_acpi and domain.state is DomainState.RUNNING:
            if action is DomainAction.SHUTDOWN:
                self._emit(uuid, K.SHUTDOWN)
                self.stop(uuid, StopReason.SHUTDOWN)
            else:  # REBOOT
                self._emit(uuid, *[K.REBOOTED] * self.reboot_resets)

    def _undefine(self, uuid: str) -> None:
        domain = self.domains.get(uuid)
        if domain is None:
            raise DomainNotFound(uuid)
        if not domain.persistent:
            raise DomainStateConflict("cannot undefine transient domain")
        if domain.active:
            domain.persistent = False
        else:
            del self.domains[uuid]

    async def save(self, uuid: str, path: str) -> None:
        domain = self._active(uuid)
        was = domain.state
        domain.state, domain.saving = DomainState.PAUSED, True
        _write(path, PARTIAL + domain.xml.encode())
        self._emit(uuid, K.SUSPENDED)
        if self.save_gate is not None:
            await self.save_gate.wait()
        domain.saving = False
        if self.save_error is not None or self.domains.get(uuid) is not domain:
            os.unlink(path)
            if self.domains.get(uuid) is domain:
                domain.state = was
                if was is DomainState.RUNNING:
                    self._emit(uuid, K.RESUMED)
            raise HypervisorError(self.save_error or "domain is not running")
        _write(path, COMPLETE + domain.xml.encode())
        self.stop(uuid, StopReason.SAVED)

    async def restore(self, path: str, *, paused: bool, persistent: bool) -> str:
        if self.restore_lost == "before":
            raise HypervisorUnavailable("libvirt: End of file while reading data")
        xml = _complete_image(path)
        if xml is None:
            raise HypervisorError(f"{path}: save image is incomplete")
        uuid = ET.fromstring(xml).findtext("uuid", "")
        existing = self.domains.get(uuid)
        if existing is not None and existing.active:
            raise DomainStateConflict(f"domain {uuid} is already active")
        name = ET.fromstring(xml).findtext("name", "")
        state = DomainState.PAUSED if paused else DomainState.RUNNING
        self.domains[uuid] = FakeDomain(uuid, name, xml, state, persistent=persistent)
        self._emit(uuid, K.STARTED, K.SUSPENDED if paused else K.RESUMED)
        if self.restore_lost == "after":
            raise HypervisorUnavailable("libvirt: End of file while reading data")
        return uuid

    async def read_saved(self, path: str) -> domxml.HostdMetadata | None:
        xml = _complete_image(path)
        return None if xml is None else domxml.metadata_in_domain(xml)

    # -- migrating: like libvirt's test driver, the fake cannot

    async def migrate(self, uuid: str, target: MigrationTarget) -> JobProgress:
        self._active(uuid)
        self.migration_targets.append(target)
        if self.migrate_gate is not None:
            self._jobs[uuid] = aborted = asyncio.Event()
            try:
                done = [asyncio.create_task(e.wait()) for e in (self.migrate_gate, aborted)]
                _, pending = await asyncio.wait(done, return_when=asyncio.FIRST_COMPLETED)
                for task in pending:
                    task.cancel()
            finally:
                del self._jobs[uuid]
            if aborted.is_set():
                raise JobAborted("operation aborted: migration out job: canceled by client")
        raise OperationUnsupported("the hypervisor cannot do this: the fake does not migrate")

    async def job_progress(self, uuid: str, *, completed: bool = False) -> JobProgress | None:
        self._active(uuid)
        if uuid in self._jobs and not completed:
            return JobProgress(
                data_total=64 << 20, data_processed=1 << 20, data_remaining=self.job_remaining
            )
        return None

    # -- looking

    async def domain_xml(self, uuid: str) -> str:
        domain = self.domains.get(uuid)
        if domain is None:
            raise DomainNotFound(uuid)
        return domain.xml

    async def domain_stats(self, uuid: str) -> DomainStats:
        domain = self._active(uuid)
        domain.cpu_time_ns += 1_000_000
        paused = domain.state is DomainState.PAUSED
        return DomainStats(
            state=domain.state,
            state_name="paused" if paused else "running",
            state_reason="user" if paused else "booted",
            cpu_time_ns=domain.cpu_time_ns,
            vcpus=1,
            memory_current_kib=65536,
            memory_maximum_kib=65536,
        )

    async def list_domains(self) -> list[DomainInfo]:
        if self.unreachable:
            raise HypervisorUnavailable("libvirt is unreachable")
        return [
            DomainInfo(
                uuid=d.uuid,
                name=d.name,
                state=d.state,
                active=d.active,
                persistent=d.persistent,
                metadata=d.metadata,
                saving=d.saving,
                starting=d.starting,
                stop_reason=d.stop_reason,
            )
            for d in self.domains.values()
        ]

    async def host_info(self) -> HostInfo:
        return HostInfo(
            hostname="fake",
            cpus=4,
            memory_total_mib=8192,
            memory_free_mib=4096,
            domains_active=sum(d.active for d in self.domains.values()),
            graphics=self.graphics,
        )

    async def events(self) -> AsyncIterator[HypervisorEvent]:
        while True:
            yield await self._queue.get()

    async def close(self) -> None:
        return None


def _write(path: str, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(data)


def _complete_image(path: str) -> str | None:
    try:
        data = open(path, "rb").read()  # noqa: SIM115 (tests only)
    except OSError:
        return None
    return data.removeprefix(COMPLETE).decode() if data.startswith(COMPLETE) else None
