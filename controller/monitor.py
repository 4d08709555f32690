"""Keeping VM and host state true: one event watch per host.

For each host the monitor holds a WatchEvents stream open, applies every
event in order, and on (re)connect reconciles against the host's full VM
list; while connected it reconciles again every reconcile_every seconds, as
a safety net, whenever the list reflects exactly the events applied. When
the host cannot be reached it is NON_RESPONSIVE and its VMs are UNKNOWN —
never DOWN — until the host answers again and says what is true.

A migration's progress, as its source reports it, goes into the
migration's operation (controller.migration_progress).

A VM the host runs that the database does not know is recorded as external
(origin EXTERNAL): it shows in ListVms and counts on its host, and nothing
kills it. A start the host reports as failed (START_FAILED) is booked again
on another host (controller.lifecycle.placement).
States an operator set (maintenance, confirmed down) are left to the
operator's verbs (controller.host_service). The migrations to a host that
cannot be reached are cancelled on their sources (controller.lifecycle.stranded).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Callable, Coroutine, Iterable
from dataclasses import dataclass

from sqlalchemy.orm import Session
from virtplane.v1 import host_agent_service_pb2 as agent_pb2
from virtplane.v1 import vm_pb2

from controller import convert
from controller.audit import Seen, seen
from controller.batched_writes import BatchedUpdates
from controller.coalescer import DEFAULT_INTERVAL, Coalescer
from controller.host_client import HostClient
from controller.host_state import HELD_STATES, set_host_state
from controller.lifecycle import transitions
from controller.lifecycle.placement import Starter, rebook
from controller.lifecycle.target import HostTarget
from controller.migration_progress import MigrationFeed
from controller.vm_store import Mutation, Outcome, VmStore
from db import repositories as repo
from db.enums import ExitReason, HostState, VmOrigin, VmState
from db.models import Host, Vm, utcnow
from virtplane_common import log_context
from virtplane_common.errors import VirtplaneError

log = logging.getLogger(__name__)


@dataclass
class _Cursor:
    epoch: str = ""
    sequence: int = 0


class _Resync(Exception):
    """The event stream has a gap: watch again from the start."""


@dataclass(frozen=True)
class MonitorSettings:
    # Seconds between attempts to reach a host that cannot be reached.
    retry: float = 2.0
    # Seconds between reconciliations against the host's full list.
    reconcile_every: float = 60.0
    # The least time between two writes of one VM's guest reports (the
    # latest wins; controller.coalescer).
    guest_report_interval: float = DEFAULT_INTERVAL
    # The same for a migration's progress (controller.migration_progress).
    migration_progress_interval: float = DEFAULT_INTERVAL


_NOT_RUNNING = (agent_pb2.HostVm.STATE_DOWN, agent_pb2.HostVm.STATE_SUSPENDED)


def _aware(when: dt.datetime) -> dt.datetime:
    # SQLite gives back naive datetimes; they were stored in UTC.
    return when if when.tzinfo else when.replace(tzinfo=dt.UTC)


def _start_failed(report: agent_pb2.HostVm) -> bool:
    return (
        report.state == agent_pb2.HostVm.STATE_DOWN
        and report.exit_reason == agent_pb2.HostVm.EXIT_REASON_START_FAILED
    )


class HostMonitor:
    """Watches one host until stopped."""

    def __init__(
        self,
        host_id: str,
        client: HostClient,
        store: VmStore,
        starter: Starter,
        settings: MonitorSettings,
        *,
        keep: Callable[[str, HostClient], Coroutine[None, None, None]] | None = None,
        lost: Callable[[str, str], Coroutine[None, None, None]] | None = None,
        writes: BatchedUpdates | None = None,
    ) -> None:
        self.host_id = host_id
        # Runs while connected: the host's CRL and certificate renewals
        # (controller.enrollment.keeper).
        self._keep = keep
        # Told (host id, why) each time the host cannot be reached: the
        # migrations to it are cancelled (controller.lifecycle.stranded).
        self._lost = lost
        self._client = client
        self._store = store
        # The event writes, grouped with other monitors' (one each without).
        self._writes = writes or BatchedUpdates(store)
        self._db = store.db
        self._starter = starter
        self._retry = settings.retry
        self._reconcile_every = settings.reconcile_every
        self._cursor = _Cursor()
        self._task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()  # events and periodic reconciliation take turns
        self.guest_reports: Coalescer[agent_pb2.GuestReportEvent] = Coalescer(
            self._store_guest_report, self._lock, settings.guest_report_interval
        )
        self.migrations = MigrationFeed(
            host_id, self._db, self._lock, settings.migration_progress_interval
        )
        self._retries: set[asyncio.Task[None]] = set()
        self.connected = asyncio.Event()
        self.reconciliations = 0
        self.event_lag_seconds = 0.0
        """From the host's time of the last event applied to the end of its
        application (controller.metrics.monitors)."""

    @property
    def host_name(self) -> str:
        return self._client.name

    @property
    def applied_sequence(self) -> int:
        """The sequence of the last event applied (or listed) in this hostd's epoch."""
        return self._cursor.sequence

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"monitor-{self._client.name}")

    async def stop(self) -> None:
        tasks = [t for t in (self._task, *self._retries) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self.guest_reports.close()
        await self.migrations.close()

    async def _run(self) -> None:
        log_context.only(host=self._client.name)  # not the call that added the host
        while True:
            try:
                await self._watch()
            except _Resync:
                self._cursor = _Cursor()
                continue
            except VirtplaneError as exc:
                log.warning("host %s: %s", self._client.name, exc)
                await self._set_unreachable(str(exc))
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("host %s: monitor failed", self._client.name)
                await self._set_unreachable("monitor error; see the controller log")
            await asyncio.sleep(self._retry)

    async def _watch(self) -> None:
        """Reconciles from the host's full list, then follows its events from
        the journal position that list reflects."""
        snapshot = await self._reconcile()
        self._cursor = _Cursor(snapshot.host_epoch, snapshot.sequence)
        tasks = [asyncio.create_task(self._reconcile_periodically())]
        if self._keep is not None:
            tasks.append(asyncio.create_task(self._keep(self.host_id, self._client)))
        try:
            async for event in self._client.events(self._cursor.sequence):
                async with self._lock:
                    self._advance(event)
                    await self._apply(event)
                if event.HasField("time"):
                    lag = utcnow() - event.time.ToDatetime(dt.UTC)
                    self.event_lag_seconds = max(0.0, lag.total_seconds())
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _reconcile_periodically(self) -> None:
        """Compares with the host's full list now and then. A list that does
        not reflect exactly the events applied so far (some are in flight)
        is skipped: applying it could move a VM back in time."""
        while True:
            await asyncio.sleep(self._reconcile_every)
            try:
                async with self._lock:
                    listed_at = utcnow()
                    snapshot = await self._client.list_vms()
                    cursor = self._cursor
                    if (snapshot.host_epoch, snapshot.sequence) != (cursor.epoch, cursor.sequence):
                        continue
                    await self._apply_snapshot(snapshot, None, listed_at)
            except VirtplaneError as exc:
                log.debug("host %s: periodic reconciliation failed: %s", self._client.name, exc)

    def _advance(self, event: agent_pb2.HostEvent) -> None:
        """Moves the cursor; a restarted hostd or a gap means resync."""
        cursor = self._cursor
        if event.host_epoch != cursor.epoch or event.sequence != cursor.sequence + 1:
            log.info(
                "host %s: events jumped from %s/%d to %s/%d; resyncing",
                self._client.name, cursor.epoch, cursor.sequence, event.host_epoch, event.sequence,
            )  # fmt: skip
            raise _Resync
        cursor.sequence = event.sequence

    async def _reconcile(self) -> agent_pb2.HostAgentServiceListVmsResponse:
        """Brings the host and its VMs in line with the host's own list."""
        listed_at = utcnow()
        snapshot = await self._client.list_vms()
        caps = await self._client.capabilities()
        await self._apply_snapshot(snapshot, caps, listed_at)
        self.connected.set()
        return snapshot

    async def _apply_snapshot(
        self,
        snapshot: agent_pb2.HostAgentServiceListVmsResponse,
        caps: agent_pb2.GetHostCapabilitiesResponse | None,
        listed_at: dt.datetime,
    ) -> None:
        """Applies the host's list, taken at listed_at. A VM whose state
        changed since (a start booked and dispatched meanwhile) is left to
        the events that follow the list: the list is older than its row."""
        reported = {vm.vm_id: vm for vm in snapshot.vms}
        sizes = await self._external_sizes(reported)
        now = utcnow()

        def work(session: Session) -> tuple[list[vm_pb2.Vm], list[HostTarget]]:
            changed: list[Vm] = []
            retries: list[HostTarget] = []
            host = session.get(Host, self.host_id)
            if host is None:
                return [], []
            if caps is not None:
                if host.state not in HELD_STATES:
                    set_host_state(session, host, HostState.UP, "")
                host.cpus = caps.cpus
                host.memory_total_mib = caps.memory_total_mib
                host.hypervisor_type = caps.hypervisor_type
                host.hostname = caps.hostname
            host.last_seen_at = now
            placed = repo.list_vms(session, host_id=self.host_id)
            found = seen(placed)
            for vm in placed:
                report = reported.pop(vm.id, None)
                if _aware(vm.state_changed_at) >= listed_at:
                    continue
                if report is None:
                    hit = transitions.missing_on_host(vm)
                elif _start_failed(report) and vm.state is VmState.WAIT_FOR_LAUNCH:
                    nxt = rebook(session, vm, self.host_id, report.message, self._starter.policy)
                    retries.extend([nxt] if nxt else [])
                    hit = True
                else:
                    hit = transitions.apply_host_vm(vm, self.host_id, report)
                    if report.HasField("guest"):
                        self._store_guest(session, vm, report.guest, now)
                        hit = True
                if vm.origin is VmOrigin.EXTERNAL and not vm.vcpus and vm.id in sizes:
                    vm.vcpus, vm.memory_mib = sizes[vm.id]
                    hit = True
                if hit:
                    changed.append(vm)
            changed.extend(self._record_external(session, reported.values(), sizes, now, found))
            return self._store.stamp(session, changed, found), retries

        changed, retries = await self._db.run(work)
        self._store.publish(changed)
        self.reconciliations += 1
        for dispatch in retries:
            self._dispatch_retry(dispatch)

    async def _external_sizes(
        self, reported: dict[str, agent_pb2.HostVm]
    ) -> dict[str, tuple[int, int]]:
        """The vCPUs and memory (MiB) of the VMs the host runs that the
        database does not know (or knows as external, of unknown size), as
        libvirt measures them."""
        ids = [i for i, vm in reported.items() if vm.state not in _NOT_RUNNING]
        unknown = await self._db.run(lambda s: repo.unsized_vm_ids(s, ids)) if ids else []
        sizes: dict[str, tuple[int, int]] = {}
        for vm_id in unknown:
            try:
                stats = await self._client.vm_stats(vm_id)
            except VirtplaneError as exc:
                log.info("host %s: no stats for external VM %s: %s", self._client.name, vm_id, exc)
                continue
            sizes[vm_id] = (stats.vcpus, stats.memory_maximum_kib // 1024)
        return sizes

    def _record_external(
        self,
        session: Session,
        reports: Iterable[agent_pb2.HostVm],
        sizes: dict[str, tuple[int, int]],
        now: dt.datetime,
        found: dict[str, Seen],
    ) -> list[Vm]:
        """Records the running VMs the host has and the database does not
        know as external VMs on this host; a known VM placed elsewhere is
        applied as the host reports it (it moves here only when it was
        migrating: controller.lifecycle.transitions), and added to found.
        Returns the VMs it changed."""
        recorded = []
        for report in reports:
            if report.state in _NOT_RUNNING:
                continue
            known = session.get(Vm, report.vm_id)
            if known is not None:
                found.update(seen([known]))
                # Placed elsewhere or DOWN: a stale report, unless it landed
                # here from a migration.
                if transitions.apply_host_vm(known, self.host_id, report):
                    recorded.append(known)
                continue
            vcpus, memory_mib = sizes.get(report.vm_id, (0, 0))
            vm = Vm(
                id=report.vm_id,
                name=f"external-{report.vm_id}",
                vcpus=vcpus,
                memory_mib=memory_mib,
                kernel_path="",
                initrd_path="",
                cmdline="",
                state=VmState.UNKNOWN,
                host_id=self.host_id,
                exit_reason=ExitReason.NONE,
                status_message="found running on its host; not created through virtplane",
                origin=VmOrigin.EXTERNAL,
                highly_available=False,
                start_paused=False,
                revision=0,
            )
            session.add(vm)
            transitions.apply_host_vm(vm, self.host_id, report)
            if report.HasField("guest"):
                self._store_guest(session, vm, report.guest, now)
            log.warning("host %s runs VM %s, unknown here: recorded as external",
                        self._client.name, report.vm_id)  # fmt: skip
            recorded.append(vm)
        return recorded

    def _dispatch_retry(self, dispatch: HostTarget) -> None:
        task = asyncio.create_task(self._starter.dispatch_quietly(dispatch))
        self._retries.add(task)
        task.add_done_callback(self._retries.discard)

    async def _apply(self, event: agent_pb2.HostEvent) -> None:
        which = event.WhichOneof("payload")
        if which == "vm_state":
            await self.guest_reports.flush(event.vm_state.vm_id)  # writes keep the events' order
            await self._on_vm_state(event.vm_state)
        elif which == "guest_report":
            await self.guest_reports.offer(event.guest_report, utcnow())
        elif which == "migration":
            await self.migrations.offer(event.migration, utcnow())

    async def _on_vm_state(self, report: agent_pb2.HostVm) -> None:
        def mutate(session: Session, vm: Vm) -> Outcome[HostTarget | None]:
            if (
                _start_failed(report)
                and vm.host_id == self.host_id
                and vm.state is VmState.WAIT_FOR_LAUNCH
            ):
                nxt = rebook(session, vm, self.host_id, report.message, self._starter.policy)
                return Outcome(True, nxt)
            return Outcome(transitions.apply_host_vm(vm, self.host_id, report), None)

        nxt = await self._update_known(report.vm_id, mutate)
        if nxt is not None:
            self._dispatch_retry(nxt)

    async def _store_guest_report(
        self, report: agent_pb2.GuestReportEvent, received: dt.datetime
    ) -> None:
        """Writes one guest report (the guest_reports Coalescer decides when)."""

        def mutate(session: Session, vm: Vm) -> Outcome[HostTarget | None]:
            if vm.host_id != self.host_id:
                return Outcome(False, None)
            self._store_guest(session, vm, report.guest, received)
            return Outcome(True, None)

        await self._update_known(report.vm_id, mutate)

    def _store_guest(
        self, session: Session, vm: Vm, guest: vm_pb2.GuestInfo, received: dt.datetime
    ) -> None:
        """Records what the guest reported, and the agent's state; a VM whose
        agent reported (and responds) is UP. Facts of a silent agent are kept
        as last observed, never blanked."""
        observed = (
            guest.observed_time.ToDatetime(dt.UTC) if guest.HasField("observed_time") else received
        )
        reported = guest.HasField("observed_time")  # the agent has sent a report
        if reported and guest.agent_state != vm_pb2.GuestInfo.AGENT_STATE_NOT_RESPONDING:
            transitions.apply_guest_report(vm, self.host_id)
        if reported and guest.agent_version:
            vm.guest_agent_version = guest.agent_version  # kept across restarts
        repo.set_guest_facts(
            session,
            vm,
            convert.guest_facts(guest),
            source=convert.GUESTD_SOURCE,
            observed_at=observed,
            received_at=received,
        )
        heard = (
            guest.last_heard_time.ToDatetime(dt.UTC)
            if guest.HasField("last_heard_time")
            else received
        )
        repo.set_guest_facts(
            session,
            vm,
            {convert.AGENT_FACT: convert.agent_fact(guest)},
            source=convert.HOSTD_SOURCE,
            observed_at=heard,
            received_at=received,
        )

    async def _update_known(
        self, vm_id: str, mutate: Mutation[HostTarget | None]
    ) -> HostTarget | None:
        try:
            return (await self._writes.update(vm_id, mutate)).value
        except VirtplaneError as exc:
            # A VM this controller does not know: the next reconciliation
            # records it as external.
            log.debug("host %s: event for unknown VM %s: %s", self._client.name, vm_id, exc)
            return None

    async def _set_unreachable(self, why: str) -> None:
        self.connected.clear()

        def work(session: Session) -> list[vm_pb2.Vm]:
            host = session.get(Host, self.host_id)
            if host is None:
                return []
            # A host confirmed down stays DOWN until it answers again; one
            # never reached yet (not enrolled) stays CONNECTING.
            if host.state is HostState.CONNECTING and host.last_seen_at is None:
                set_host_state(session, host, HostState.CONNECTING, f"not reached yet: {why}")
            elif host.state not in HELD_STATES and host.state is not HostState.DOWN:
                set_host_state(session, host, HostState.NON_RESPONSIVE, why)
            placed = repo.list_vms(session, host_id=self.host_id)
            found = seen(placed)
            lost = [vm for vm in placed if transitions.host_lost(vm)]
            return self._store.stamp(session, lost, found)

        self._store.publish(await self._db.run(work))
        if self._lost is not None:
            await self._lost(self.host_id, why)
