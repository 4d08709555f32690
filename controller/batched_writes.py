"""Group commit of VM updates: the updates asked while a transaction is
under way are written together in the next one.

A thousand host monitors each apply their host's events one at a time
(each waits for its write before the next event: a host's events stay in
order), so one transaction per event is a commit and a revision counter
lock per event. Here the updates queued meanwhile share one transaction
and one block of revisions (VmStore.stamp). A VM updated twice in one batch
is stamped once, with both changes.

The batch is all or nothing: when one update's mutation raises, every
update of that batch is run again on its own (VmStore.update), so that only
its own caller sees the error.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from sqlalchemy.orm import Session
from virtplane.v1 import vm_pb2

from controller.audit import Seen, seen
from controller.errors import VmNotFound
from controller.vm_store import Mutation, Outcome, Updated, VmStore
from db import repositories as repo
from db.models import Vm

T = TypeVar("T")

# The most updates one transaction takes.
MAX_BATCH = 200


@dataclass
class _Item(Generic[T]):
    vm_ref: str
    mutate: Mutation[T]
    done: asyncio.Future[Updated[T]] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


class _MutationFailed(Exception):
    """A mutation of the batch raised: run them one by one."""


@dataclass
class _Written:
    # Per item: the VM and the mutation's outcome, or the VM not found.
    results: list[tuple[Vm, Outcome[Any]] | None]
    published: list[vm_pb2.Vm]


class BatchedUpdates:
    """Up to `writers` batches are written at once (PostgreSQL runs them
    side by side; SQLite's one writer makes a second useless)."""

    def __init__(self, store: VmStore, writers: int = 1) -> None:
        self._store = store
        self._queue: list[_Item[Any]] = []
        self._writers: set[asyncio.Task[None]] = set()
        # Writers that will still look at the queue: one that found it empty
        # leaves this count in the same step, so an update queued after that
        # starts a new one (a finished task leaves _writers only later).
        self._looking = 0
        self._most = max(1, writers)
        self.transactions = 0  # how many batches were written

    async def update(self, vm_ref: str, mutate: Mutation[T]) -> Updated[T]:
        """VmStore.update(vm_ref, mutate), in the next batch."""
        item: _Item[T] = _Item(vm_ref, mutate)
        self._queue.append(item)
        if self._looking < self._most:
            self._looking += 1
            writer = asyncio.create_task(self._write_all())
            self._writers.add(writer)
            writer.add_done_callback(self._writers.discard)
        return await item.done

    async def close(self) -> None:
        await asyncio.gather(*self._writers, return_exceptions=True)

    async def _write_all(self) -> None:
        try:
            while self._queue:
                batch, self._queue = self._queue[:MAX_BATCH], self._queue[MAX_BATCH:]
                await self._write(batch)
        finally:
            self._looking -= 1  # no await since the queue was seen empty

    async def _write(self, batch: list[_Item[Any]]) -> None:
        try:
            written = await self._store.db.run(lambda s: _apply(self._store, s, batch))
        except _MutationFailed:
            await asyncio.gather(*(self._one(item) for item in batch))
            return
        except Exception as exc:  # the transaction itself failed: every caller sees it
            for item in batch:
                if not item.done.done():
                    item.done.set_exception(exc)
            return
        self.transactions += 1
        self._store.publish(written.published)
        for item, result in zip(batch, written.results, strict=True):
            if item.done.done():
                continue
            if result is None:
                item.done.set_exception(VmNotFound(item.vm_ref))
            else:
                item.done.set_result(Updated(result[0], result[1].value))

    async def _one(self, item: _Item[Any]) -> None:
        try:
            updated = await self._store.update(item.vm_ref, item.mutate)
        except Exception as exc:
            if not item.done.done():
                item.done.set_exception(exc)
            return
        if not item.done.done():
            item.done.set_result(updated)


def _apply(store: VmStore, session: Session, batch: list[_Item[Any]]) -> _Written:
    results: list[tuple[Vm, Outcome[Any]] | None] = []
    found: dict[str, Seen] = {}
    changed: dict[str, Vm] = {}
    for item in batch:
        vm = repo.find_vm(session, item.vm_ref)
        if vm is None:
            results.append(None)
            continue
        before: Mapping[str, Seen] = seen([vm])
        try:
            outcome = item.mutate(session, vm)
        except Exception as exc:
            raise _MutationFailed() from exc
        for vm_id, what in before.items():
            found.setdefault(vm_id, what)  # as the batch found it
        if outcome.changed:
            changed.setdefault(vm.id, vm)
        results.append((vm, outcome))
    published = store.stamp(session, list(changed.values()), found)
    return _Written(results, published)
