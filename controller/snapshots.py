"""WatchVms's initial snapshots, built once per revision and shared.

A snapshot is every VM's KIND_SNAPSHOT message, read in one transaction
after the revision counter: it holds every change up to that revision (and
maybe some newer ones). A subscriber may take any snapshot whose revision
is at least the current revision it read after subscribing: the changes
after that revision are committed after it subscribed, so its subscription
delivers them (and the stream drops those it already sent). Subscribers
that arrive together share one build; only the newest snapshot is kept.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from sqlalchemy.orm import Session
from virtplane.v1 import vm_service_pb2 as vm_api

from controller import convert
from controller.watch import Kind
from db import repositories as repo
from db.session import Database


@dataclass(frozen=True)
class Snapshot:
    revision: int
    messages: tuple[vm_api.WatchVmsResponse, ...]


def _build(session: Session) -> Snapshot:
    revision = repo.current_revision(session)  # first: the rows read next are at least as new
    messages = tuple(
        vm_api.WatchVmsResponse(kind=Kind.KIND_SNAPSHOT, vm=vm, revision=vm.status.revision)
        for vm in (convert.vm(row) for row in repo.list_vms(session))
    )
    return Snapshot(revision, messages)


class Snapshots:
    def __init__(self, db: Database) -> None:
        self._db = db
        self._latest: Snapshot | None = None
        self._building: asyncio.Future[Snapshot] | None = None
        self.builds = 0  # how many snapshots were read from the database

    async def at_least(self, revision: int) -> Snapshot:
        """A snapshot of revision or newer: the newest kept, the one being
        built, or a new one."""
        latest = self._latest
        if latest is not None and latest.revision >= revision:
            return latest
        if self._building is not None:
            built = await asyncio.shield(self._building)
            if built.revision >= revision:
                return built
        if self._building is None:
            self._building = asyncio.ensure_future(self._db.run(_build))
            self._building.add_done_callback(self._built)
            self.builds += 1
        return await asyncio.shield(self._building)

    def _built(self, done: asyncio.Future[Snapshot]) -> None:
        if self._building is done:
            self._building = None
        if done.cancelled() or done.exception() is not None:
            return
        snapshot = done.result()
        if self._latest is None or snapshot.revision >= self._latest.revision:
            self._latest = snapshot
