"""WatchVms's snapshots (controller.snapshots), on each engine: subscribers
that arrive at one revision share one read of every VM; a change makes the
next subscriber read again, and its snapshot holds the change."""

from __future__ import annotations

import asyncio

from sqlalchemy.orm import Session

from controller.snapshots import Snapshots
from controller.vm_store import Outcome, VmStore
from controller.watch import WatchHub
from db import repositories as repo
from db.models import Vm
from db.session import Database
from tests.support.db_rig import add_rows, database, vm_row

__all__ = ["database"]


async def test_one_read_per_revision_shared_by_the_subscribers(database: Database) -> None:
    add_rows(database, *(vm_row(f"v{i}") for i in range(5)))
    store = VmStore(database, WatchHub(queue_size=100))
    snapshots = Snapshots(database)
    current = await database.run(repo.current_revision)
    together = await asyncio.gather(*(snapshots.at_least(current) for _ in range(10)))
    assert snapshots.builds == 1
    assert all(s is together[0] for s in together)
    assert sorted(m.vm.name for m in together[0].messages) == [f"v{i}" for i in range(5)]
    assert (await snapshots.at_least(current)) is together[0]  # later, same revision
    assert snapshots.builds == 1

    def rename(_s: Session, vm: Vm) -> Outcome[None]:
        vm.name = "renamed"
        return Outcome(True, None)

    await store.update("v3", rename)
    newer = await snapshots.at_least(await database.run(repo.current_revision))
    assert snapshots.builds == 2
    assert newer.revision > together[0].revision
    assert "renamed" in {m.vm.name for m in newer.messages}
