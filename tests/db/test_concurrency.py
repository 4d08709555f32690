"""Concurrent writers, on each engine: what the controller relies on when
several database workers (PostgreSQL) write at once.

On SQLite every transaction holds the database's write lock from its start,
so writers queue; on PostgreSQL they interleave and row locks and version
checks keep them apart. The tests hold one transaction open on purpose and
look at what a second one does meanwhile.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import pytest
from sqlalchemy import create_engine, select
from sqlalchemy.orm import Session
from sqlalchemy.orm.exc import StaleDataError
from sqlalchemy.pool import NullPool
from virtplane.v1 import host_agent_service_pb2 as agent_pb2

from controller.errors import HostHasVms, NoHostAvailable
from controller.host_service import enter_maintenance
from controller.hosts import HostClients
from controller.lifecycle.placement import Starter, book_fresh
from controller.lifecycle.power import VmVerbs
from controller.requests import Call
from controller.scheduler import Policy
from controller.vm_store import Outcome, VmStore
from controller.watch import WatchHub
from db import migrate
from db import repositories as repo
from db.models import RevisionCounter, Vm
from db.session import Database
from tests.support.db_rig import WAIT, add_rows, hold_open, host_row, still_waiting, vm_row

T = TypeVar("T")


class Abandon(Exception):
    """Raised inside a unit of work to roll it back."""


@pytest.fixture
def pool() -> Iterator[ThreadPoolExecutor]:
    with ThreadPoolExecutor(max_workers=8) as executor:
        yield executor


@pytest.fixture
def postgres_with_vm(postgres_url: str) -> Iterator[Database]:
    """A PostgreSQL database migrated to head, holding one VM, "v"."""
    database = Database(postgres_url)
    migrate.upgrade(database.engine)
    add_rows(database, vm_row("v"))
    yield database
    database.close()


# --- the revision counter -------------------------------------------------------------


def test_revisions_are_unique_and_taken_in_commit_order(
    database: Database, database_url: str, pool: ThreadPoolExecutor
) -> None:
    # A plain engine that reads what is committed, outside of any writer.
    observer = create_engine(database_url, poolclass=NullPool)

    def take(s: Session) -> tuple[int, int]:
        revision = repo.allocate_revisions(s)
        with observer.connect() as conn:
            committed = conn.scalar(select(RevisionCounter.value))
        return revision, int(committed or 0)

    def writer() -> list[tuple[int, int]]:
        return [database.transaction(take) for _ in range(25)]

    try:
        results = [f.result(WAIT * 4) for f in [pool.submit(writer) for _ in range(4)]]
    finally:
        observer.dispose()
    for taken in results:
        mine = [revision for revision, _ in taken]
        assert mine == sorted(set(mine))  # strictly increasing within a writer
    every = sorted(revision for taken in results for revision, _ in taken)
    assert every == list(range(1, 101))  # unique, and no gaps
    # When a transaction gets revision r, every one before r is committed:
    # watchers resuming from r can never miss a change committed later.
    assert all(committed == revision - 1 for taken in results for revision, committed in taken)
    assert database.transaction(repo.current_revision) == 100


def test_a_transaction_holding_revisions_makes_the_next_one_wait(
    database: Database, pool: ThreadPoolExecutor
) -> None:
    def take_and_abandon(s: Session) -> None:
        raise Abandon(repo.allocate_revisions(s, 3))

    held, release = hold_open(pool, database, lambda s: repo.allocate_revisions(s, 3))
    waiting = pool.submit(database.transaction, repo.allocate_revisions)
    assert still_waiting(waiting)
    release.set()
    assert held.result(WAIT) == 3
    assert waiting.result(WAIT) == 4

    # A rolled-back transaction gives its revisions back.
    with pytest.raises(Abandon):
        database.transaction(take_and_abandon)
    assert database.transaction(repo.allocate_revisions) == 5


# --- booking hosts --------------------------------------------------------------------


def _book(name: str) -> Callable[[Session], str]:
    def work(s: Session) -> str:
        vm = repo.find_vm(s, name)
        assert vm is not None
        return book_fresh(s, vm, Policy.EVEN_SPREAD, automatic=False).host_name

    return work


def test_two_concurrent_bookings_cannot_over_book_a_host(
    database: Database, pool: ThreadPoolExecutor
) -> None:
    add_rows(database, host_row("h", memory=1024), vm_row("a", 768), vm_row("b", 768))

    first, release = hold_open(pool, database, _book("a"))
    second = pool.submit(database.transaction, _book("b"))
    # The second placement waits for the first to commit ...
    assert still_waiting(second)
    release.set()
    assert first.result(WAIT) == "h"
    # ... and then sees the first VM's memory booked on the host.
    with pytest.raises(NoHostAvailable, match="h: memory: needs 768 MiB, 256 MiB free"):
        second.result(WAIT)
    assert database.transaction(repo.host_usage) == {"id-h": (768, 1, 1)}


def test_a_booking_in_flight_makes_maintenance_wait_then_refuse(
    database: Database, pool: ThreadPoolExecutor
) -> None:
    add_rows(database, host_row("h", memory=1024), vm_row("a"))
    booking, release = hold_open(pool, database, _book("a"))
    maintenance = pool.submit(database.transaction, lambda s: enter_maintenance(s, "h"))
    assert still_waiting(maintenance)
    release.set()
    assert booking.result(WAIT) == "h"
    # It then sees the VM the booking placed there.
    with pytest.raises(HostHasVms, match=r"VMs run on it.*: a$"):
        maintenance.result(WAIT)


def test_maintenance_in_flight_makes_a_booking_wait_then_skip_the_host(
    database: Database, pool: ThreadPoolExecutor
) -> None:
    add_rows(database, host_row("h", memory=1024), vm_row("a"))
    maintenance, release = hold_open(pool, database, lambda s: enter_maintenance(s, "h"))
    booking = pool.submit(database.transaction, _book("a"))
    assert still_waiting(booking)
    release.set()
    assert maintenance.result(WAIT).name == "h"
    with pytest.raises(NoHostAvailable, match="h: maintenance: host is in maintenance"):
        booking.result(WAIT)


class _FakeHost:
    """Stands in for a hostd that accepts every VM."""

    def __init__(self) -> None:
        self.created: list[str] = []

    async def create_vm(self, config: agent_pb2.VmConfig, request_id: str = "") -> None:
        await asyncio.sleep(0.01)
        self.created.append(config.vm_id)


class _FakeClients(HostClients):
    def __init__(self, host: _FakeHost) -> None:
        super().__init__(timeout=1.0)
        self._host = host

    def get(self, host_id: str, name: str, address: str) -> Any:
        return self._host


async def test_concurrent_starts_fill_a_host_and_no_more(database_url: str) -> None:
    database = Database(database_url)
    try:
        migrate.upgrade(database.engine)
        add_rows(database, host_row("h", memory=1024), *[vm_row(f"v{i}", 256) for i in range(10)])
        hub = WatchHub(queue_size=100)
        changes = hub.subscribe()
        host = _FakeHost()
        store, clients = VmStore(database, hub), _FakeClients(host)
        service = VmVerbs(store, clients, Starter(store, clients, Policy.EVEN_SPREAD))

        results = await asyncio.gather(
            *[service.start(f"v{i}", Call("StartVm")) for i in range(10)],
            return_exceptions=True,
        )
    finally:
        database.close()

    started = [r for r in results if not isinstance(r, BaseException)]
    refused = [r for r in results if isinstance(r, BaseException)]
    assert len(started) == 4 == len(host.created)
    assert len(refused) == 6
    assert all(isinstance(r, NoHostAvailable) for r in refused), refused
    assert {vm.host_id for vm, _op in started} == {"id-h"}
    # Each booking was published once, with a revision of its own.
    revisions = [(await changes.next()).revision for _ in range(4)]
    assert len(set(revisions)) == 4


# --- version_id on rows several writers touch -------------------------------------------


def test_a_concurrent_update_of_a_vm_raises_stale_data(
    postgres_with_vm: Database, pool: ThreadPoolExecutor
) -> None:
    # PostgreSQL only: on SQLite the second transaction could not even read
    # the VM while the first one is open.
    database = postgres_with_vm

    def theirs(s: Session) -> None:
        s.get_one(Vm, "id-v").vcpus = 4
        s.flush()  # holds the row until released

    with Session(database.engine) as mine:
        vm = mine.get_one(Vm, "id-v")
        assert vm.version_id == 1
        held, release = hold_open(pool, database, theirs)
        vm.vcpus = 2
        flushed = pool.submit(mine.flush)
        assert still_waiting(flushed)  # on their row lock
        release.set()
        held.result(WAIT)
        # They committed version 2: the UPDATE … WHERE version_id = 1 matches nothing.
        with pytest.raises(StaleDataError):
            flushed.result(WAIT)
        mine.rollback()
    assert database.transaction(lambda s: s.get_one(Vm, "id-v").vcpus) == 4


def test_a_unit_of_work_that_lost_a_race_runs_again(
    postgres_with_vm: Database, pool: ThreadPoolExecutor
) -> None:
    # PostgreSQL only, for the same reason as above.
    database = postgres_with_vm
    both_read = threading.Barrier(2, timeout=WAIT)
    versions_read: list[int] = []
    lock = threading.Lock()

    def add_vcpu(s: Session) -> int:
        vm = s.get_one(Vm, "id-v")
        with lock:
            versions_read.append(vm.version_id)
            first_round = len(versions_read) <= 2
        if first_round:
            both_read.wait()  # both read the VM before either writes it
        vm.vcpus += 1
        s.flush()
        return vm.vcpus

    futures = [pool.submit(database.transaction, add_vcpu) for _ in range(2)]
    assert sorted(f.result(WAIT) for f in futures) == [2, 3]  # no update lost
    # Both read version 1; the loser's write found version 2, so it ran again.
    assert sorted(versions_read) == [1, 1, 2]


async def test_concurrent_changes_to_one_vm_are_all_kept(database_url: str) -> None:
    database = Database(database_url)
    try:
        migrate.upgrade(database.engine)
        add_rows(database, vm_row("v"))
        hub = WatchHub(queue_size=100)
        changes = hub.subscribe()
        store = VmStore(database, hub)

        def add_vcpu(_s: Session, vm: Vm) -> Outcome[None]:
            vm.vcpus += 1
            return Outcome(True, None)

        # Five writers: on PostgreSQL each may lose to each of the other four
        # at most once, and the database runs it again up to five times.
        await asyncio.gather(*[store.update("v", add_vcpu) for _ in range(5)])
        final = await store.update("v", lambda _s, _vm: Outcome(False, None))
    finally:
        database.close()
    assert final[0].vcpus == 6
    published = [(await changes.next()).revision for _ in range(5)]
    assert len(set(published)) == 5
    assert final[0].revision == max(published)
