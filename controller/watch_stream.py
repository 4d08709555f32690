"""WatchVms: a snapshot (or the changes since a revision), then every
change, filtered by VM ids or host.

Resuming: the VMs changed after the client's after_revision are the rows
whose revision is newer (each sent as it is now), and the deletions are in
the audit log with their revisions. A revision older than the log's floor
(db.repositories.resume_floor) or newer than any given gets a fresh
snapshot instead, and the KIND_SNAPSHOT_COMPLETE message says why.

Snapshots are built once per revision and shared by the subscribers that
arrive together (controller.snapshots); each change's message is built once
and written to every subscriber (controller.watch.Change.message).

A client too slow to read is cut off with RESOURCE_EXHAUSTED ("client too
slow"): its stream's writer races the subscription's overflow, so a client
that does not read at all (its HTTP/2 window full, the write blocked) is cut
off as soon as its queue overflows, and never holds up the other watchers.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import grpc
from sqlalchemy.orm import Session
from virtplane.v1 import vm_pb2
from virtplane.v1 import vm_service_pb2 as vm_api

from controller import convert
from controller.errors import HostNotFound
from controller.snapshots import Snapshots
from controller.vm_store import VmStore
from controller.watch import Kind, Subscription, TooSlow
from db import repositories as repo
from virtplane_common.validation import check_reference

Context = grpc.aio.ServicerContext[Any, Any]


@dataclass(frozen=True)
class _Filter:
    vm_ids: frozenset[str]
    host_id: str

    @property
    def matches_all(self) -> bool:
        return not self.vm_ids and not self.host_id

    def matches(self, vm: vm_pb2.Vm) -> bool:
        if self.vm_ids and vm.id not in self.vm_ids:
            return False
        return not self.host_id or vm.status.host_id == self.host_id


@dataclass
class _Start:
    messages: Sequence[vm_api.WatchVmsResponse]
    revision: int
    resumed: bool
    reason: str


def _resumed(session: Session, after: int, where: _Filter) -> _Start:
    """The changes after after_revision, or (resumed false) why they cannot
    be given: the snapshot follows instead."""
    current = repo.current_revision(session)  # first: the rows read next are at least as new
    floor = repo.resume_floor(session)
    if after < floor:
        reason = (
            f"revision {after} is older than the oldest this controller can resume from ({floor})"
        )
        return _Start((), current, False, reason)
    if after > current:
        reason = f"revision {after} is newer than the newest this controller gave ({current})"
        return _Start((), current, False, reason)
    return _Start(_changes_after(session, after, where), current, True, "")


def _changes_after(session: Session, after: int, where: _Filter) -> list[vm_api.WatchVmsResponse]:
    changed = [
        vm_api.WatchVmsResponse(kind=Kind.KIND_CHANGED, vm=vm, revision=vm.status.revision)
        for vm in (convert.vm(row) for row in repo.vms_changed_after(session, after))
        # A VM no longer on any host may have left the watched one meanwhile.
        if where.matches(vm)
        or (where.host_id and not vm.status.host_id and (not where.vm_ids or vm.id in where.vm_ids))
    ]
    deleted = [
        vm_api.WatchVmsResponse(
            kind=Kind.KIND_DELETED,
            vm=vm_pb2.Vm(
                id=event.vm_id or "", status=vm_pb2.VmStatus(revision=event.revision or 0)
            ),
            revision=event.revision or 0,
        )
        for event in repo.deletions_after(session, after)
        if not where.vm_ids or event.vm_id in where.vm_ids
    ]
    return sorted(changed + deleted, key=lambda m: m.revision)


class WatchStream:
    def __init__(self, store: VmStore) -> None:
        self._store = store
        self.snapshots = Snapshots(store.db)

    async def _filter(self, request: vm_api.WatchVmsRequest) -> _Filter:
        host_id = ""
        vm_ids = frozenset(check_reference(f"vm_ids[{i}]", v) for i, v in enumerate(request.vm_ids))
        if request.host:
            host_ref = check_reference("host", request.host)

            def find(session: Session) -> str:
                host = repo.find_host(session, host_ref)
                if host is None:
                    raise HostNotFound(host_ref)
                return host.id

            host_id = await self._store.db.run(find)
        return _Filter(vm_ids, host_id)

    async def _start(self, request: vm_api.WatchVmsRequest, where: _Filter) -> _Start:
        reason = ""
        if request.after_revision:
            after = request.after_revision
            start = await self._store.db.run(lambda s: _resumed(s, after, where))
            if start.resumed:
                return start
            reason, current = start.reason, start.revision
        else:
            current = await self._store.db.run(repo.current_revision)
        snapshot = await self.snapshots.at_least(current)
        if where.matches_all:
            messages: Sequence[vm_api.WatchVmsResponse] = snapshot.messages
        else:
            messages = [m for m in snapshot.messages if where.matches(m.vm)]
        return _Start(messages, snapshot.revision, False, reason)

    async def serve(self, request: vm_api.WatchVmsRequest, context: Context) -> None:
        where = await self._filter(request)
        sub = self._store.hub.subscribe()  # before the snapshot: no change falls between
        # The stream is written by one task; a subscriber whose queue
        # overflows (it does not read, its writes block) is cut off by
        # cancelling it, whatever it waits for.
        pump = asyncio.ensure_future(self._pump(request, where, sub, context))
        cut = asyncio.ensure_future(sub.cut_off.wait())
        try:
            await asyncio.wait((pump, cut), return_when=asyncio.FIRST_COMPLETED)
            if not pump.done():
                raise TooSlow()
            pump.result()
        finally:
            for task in (pump, cut):
                task.cancel()
            await asyncio.gather(pump, cut, return_exceptions=True)
            sub.close()

    async def _pump(
        self,
        request: vm_api.WatchVmsRequest,
        where: _Filter,
        sub: Subscription,
        context: Context,
    ) -> None:
        start = await self._start(request, where)
        seen: dict[str, int] = {}
        inside: set[str] = set()  # the VMs the client holds as matching
        known = request.after_revision if start.resumed else 0
        for message in start.messages:
            seen[message.vm.id] = message.revision
            if message.kind != Kind.KIND_DELETED:
                inside.add(message.vm.id)
            await context.write(message)
        newest = max([start.revision, *seen.values()])
        await context.write(
            vm_api.WatchVmsResponse(
                kind=Kind.KIND_SNAPSHOT_COMPLETE,
                revision=newest,
                resumed=start.resumed,
                reason=start.reason,
            )
        )
        while True:
            change = await sub.next()
            vm = change.vm
            if change.revision <= seen.get(vm.id, known):
                continue  # already sent, or older than what was sent
            # Changes committed in order may still be published out of
            # order by concurrent database workers: never send a VM back
            # to an older revision.
            if where.matches(vm) and change.kind != Kind.KIND_DELETED:
                inside.add(vm.id)
            elif vm.id in inside:
                inside.discard(vm.id)  # sent once more, as it leaves
            elif not where.matches(vm):
                continue
            seen[vm.id] = change.revision
            await context.write(change.message)  # built once, for every subscriber
