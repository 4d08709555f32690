"""Group commit of the monitors' VM updates (controller.batched_writes), on
each engine: updates asked together share one transaction and one block of
revisions; each caller gets its own answer, and its own error."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from sqlalchemy.orm import Session

from controller.batched_writes import BatchedUpdates
from controller.errors import VmNotFound
from controller.vm_store import Outcome, VmStore
from controller.watch import WatchHub
from db.models import Vm
from db.session import Database
from tests.support.db_rig import add_rows, database, vm_row

__all__ = ["database"]


@pytest.fixture
def store(database: Database) -> Iterator[VmStore]:
    add_rows(database, *(vm_row(f"v{i}") for i in range(20)))
    yield VmStore(database, WatchHub(queue_size=1000))


def add_vcpu(_s: Session, vm: Vm) -> Outcome[int]:
    vm.vcpus += 1
    return Outcome(True, vm.vcpus)


async def test_updates_asked_together_share_transactions_and_are_each_published(
    store: VmStore,
) -> None:
    changes = store.hub.subscribe()
    batched = BatchedUpdates(store)
    answers = await asyncio.gather(*(batched.update(f"v{i}", add_vcpu) for i in range(20)))
    assert [a.value for a in answers] == [2] * 20
    assert batched.transactions < 20  # at least the ones queued behind the first shared one
    published = [await changes.next() for _ in range(20)]
    assert sorted(c.vm.name for c in published) == sorted(f"v{i}" for i in range(20))
    assert len({c.revision for c in published}) == 20  # one revision each
    stored = await store.update("v7", lambda _s, _vm: Outcome(False, None))
    assert stored.vm.vcpus == 2
    assert stored.vm.revision == max(c.revision for c in published if c.vm.name == "v7")


async def test_a_vm_changed_twice_in_one_batch_keeps_both_changes(store: VmStore) -> None:
    batched = BatchedUpdates(store)
    first, second = await asyncio.gather(
        batched.update("v1", add_vcpu), batched.update("v1", add_vcpu)
    )
    assert sorted([first.value, second.value]) == [2, 3]
    assert (await store.update("v1", lambda _s, _vm: Outcome(False, None))).vm.vcpus == 3


async def test_a_failing_update_fails_alone(store: VmStore) -> None:
    def refuse(_s: Session, _vm: Vm) -> Outcome[int]:
        raise VmNotFound("refused on purpose")

    batched = BatchedUpdates(store)
    results = await asyncio.gather(
        batched.update("v1", add_vcpu),
        batched.update("v2", refuse),
        batched.update("nope", add_vcpu),
        batched.update("v3", add_vcpu),
        return_exceptions=True,
    )
    assert results[0].value == 2 and results[3].value == 2  # type: ignore[union-attr]
    assert isinstance(results[1], VmNotFound) and "on purpose" in str(results[1])
    assert isinstance(results[2], VmNotFound)
    v2 = await store.update("v2", lambda _s, _vm: Outcome(False, None))
    assert v2.vm.vcpus == 1  # nothing of the failed batch was kept


async def test_an_update_asked_as_a_batch_ends_is_written(store: VmStore) -> None:
    # Each update is asked as soon as the previous one is answered: while its
    # writer is ending, never left in the queue with nobody to write it.
    batched = BatchedUpdates(store)
    for expected in range(2, 12):
        async with asyncio.timeout(30):  # no task between: the update is asked at once
            answer = await batched.update("v1", add_vcpu)
        assert answer.value == expected
