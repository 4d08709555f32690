"""The balancer over rows, on each engine: it counts how long a host stays
over from its own looks, asks the one migration it decides through
MigrateVm's path (an operation of kind MIGRATE_VM with cause "balancing",
within the migration limits: here it waits its turn, or the source cannot
be reached, so no hostd is needed) with an audit entry carrying the reason,
holds back while that migration runs, leaves hosts in maintenance alone,
respects affinity, and acts on nothing with the policy off (the dry run
still answers). Rules alone: tests/controller/test_balancing.py."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from controller.balancing import BalancePolicy, BalanceSettings
from controller.balancing_loop import BALANCING, CAUSE, Balancer
from controller.hosts import HostClients
from controller.lifecycle.migration_limits import MigrationLimits
from controller.lifecycle.placement import Starter
from controller.lifecycle.power import VmVerbs
from controller.main import parse
from controller.scheduler import Policy
from controller.vm_store import VmStore
from controller.watch import WatchHub
from db import repositories as repo
from db.enums import HostState, OperationKind, OperationState, VmState
from db.models import AffinityGroup, AffinityMember, Event, Operation
from db.session import Database
from tests.support import db_rig
from tests.support.db_rig import add_rows, host_row, vm_row

database = db_rig.database  # the fixture

T0 = dt.datetime(2026, 12, 1, 12, 0, tzinfo=dt.UTC)
ON = BalanceSettings(BalancePolicy.EVENLY_DISTRIBUTED, 80, 40, sustained_seconds=300)
# Every migration waits its turn: no host is called.
NONE_AT_ONCE = MigrationLimits(outgoing_per_host=0)


@pytest.fixture
def cluster(database: Database) -> Database:
    """h1 at 91% of its memory (c, 1500 MiB, is the VM to move); h2 at 20%."""
    sizes = {"a": 4000, "b": 2000, "c": 1500, "d": 1000, "e": 600}
    add_rows(
        database,
        host_row("h1", 10000),
        host_row("h2", 10000),
        *(vm_row(n, m, state=VmState.UP, host="id-h1") for n, m in sizes.items()),
        vm_row("x", 2000, state=VmState.UP, host="id-h2"),
    )
    return database


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> dt.datetime:
        return self.now


def _balancer(
    database: Database, settings: BalanceSettings = ON, limits: MigrationLimits = NONE_AT_ONCE
) -> tuple[Balancer, Clock]:
    store = VmStore(database, WatchHub(queue_size=100))
    clients = HostClients(timeout=1.0)
    starter = Starter(store, clients, Policy.EVEN_SPREAD)
    verbs = VmVerbs(store, clients, starter, limits=limits)
    clock = Clock()
    return Balancer(database, verbs, settings, Policy.EVEN_SPREAD, clock), clock


def _migrations(database: Database) -> list[Operation]:
    def work(s: Session) -> list[Operation]:
        query = select(Operation).where(Operation.kind == OperationKind.MIGRATE_VM)
        return list(s.scalars(query).all())

    return database.transaction(work)


def _entries(database: Database) -> list[Event]:
    def work(s: Session) -> list[Event]:
        return list(s.scalars(select(Event).where(Event.kind == BALANCING)).all())

    return database.transaction(work)


async def test_a_host_over_for_the_sustained_time_sheds_one_vm_with_its_reason(
    cluster: Database,
) -> None:
    balancer, clock = _balancer(cluster)
    first = await balancer.run_once()
    assert first.move is None and first.reason.endswith("for 0 s, not yet 300 s")
    clock.now = T0 + dt.timedelta(seconds=299)
    assert (await balancer.run_once()).move is None
    clock.now = T0 + dt.timedelta(seconds=300)
    decided = await balancer.run_once()
    reason = "h1 memory 91% > 80% for 300 s; h2 at 20% < 40%; moving c (1500 MiB)"
    assert decided.reason == reason
    [op] = _migrations(cluster)
    assert (op.vm_id, op.destination_ref, op.cause) == ("id-c", "id-h2", CAUSE)
    assert op.state is OperationState.RUNNING and op.waiting  # within the limits
    [entry] = _entries(cluster)
    assert (entry.message, entry.vm_id, entry.host_id) == (reason, "id-c", "id-h1")
    assert entry.operation_id == op.id
    # While it runs (here: waits its turn), no other balancing migration.
    clock.now = T0 + dt.timedelta(seconds=400)
    held = await balancer.run_once()
    assert held.move is None and held.reason == "a balancing migration is under way: c"
    assert len(_migrations(cluster)) == 1 and len(_entries(cluster)) == 1


async def test_a_dip_under_the_threshold_restarts_the_count(cluster: Database) -> None:
    balancer, clock = _balancer(cluster)
    await balancer.run_once()

    def dip(s: Session) -> None:
        vm = repo.find_vm(s, "a")
        assert vm is not None
        vm.state = VmState.DOWN

    cluster.transaction(dip)
    clock.now = T0 + dt.timedelta(seconds=200)
    assert (await balancer.run_once()).reason == "no UP host over 80%"

    def back(s: Session) -> None:
        vm = repo.find_vm(s, "a")
        assert vm is not None
        vm.state = VmState.UP

    cluster.transaction(back)
    clock.now = T0 + dt.timedelta(seconds=400)
    again = await balancer.run_once()
    assert again.move is None and again.reason.endswith("for 0 s, not yet 300 s")


async def test_a_migration_whose_source_cannot_be_reached_is_recorded_failed(
    cluster: Database,
) -> None:
    """Within the limits the source is called; it is unreachable here, so
    the operation (cause "balancing") ends FAILED and the entry says so."""

    def unreachable(s: Session) -> None:
        h1 = repo.find_host(s, "h1")
        assert h1 is not None
        h1.address = "127.0.0.1:1"

    cluster.transaction(unreachable)
    now = BalanceSettings(BalancePolicy.EVENLY_DISTRIBUTED, sustained_seconds=0)
    balancer, _clock = _balancer(cluster, now, MigrationLimits())
    decided = await balancer.run_once()
    assert decided.move is not None
    [op] = _migrations(cluster)
    assert (op.state, op.cause) == (OperationState.FAILED, CAUSE)
    [entry] = _entries(cluster)
    assert entry.message.startswith(decided.reason + "; asking the migration failed: ")
    c = cluster.transaction(lambda s: repo.find_vm(s, "c"))
    assert c is not None and (c.state, c.host_id) == (VmState.UP, "id-h1")


async def test_hosts_in_maintenance_are_left_alone(cluster: Database) -> None:
    def preparing(s: Session) -> None:
        h1 = repo.find_host(s, "h1")
        assert h1 is not None
        h1.state = HostState.PREPARING_FOR_MAINTENANCE

    cluster.transaction(preparing)
    balancer, _clock = _balancer(cluster, BalanceSettings(BalancePolicy.EVENLY_DISTRIBUTED))
    decided = await balancer.run_once()
    assert decided.move is None and decided.reason == "no UP host over 80%"
    assert _migrations(cluster) == []


async def test_affinity_from_the_database_is_respected(cluster: Database) -> None:
    """c may not join x (an enforcing negative group) on h2: b moves instead."""

    def apart(s: Session) -> None:
        s.add(AffinityGroup(id="g", name="apart", positive=False, enforcing=True))
        s.flush()
        s.add_all(
            [AffinityMember(group_id="g", vm_id="id-c"), AffinityMember(group_id="g", vm_id="id-x")]
        )

    cluster.transaction(apart)
    balancer, _clock = _balancer(cluster, BalanceSettings(sustained_seconds=0))
    decided = await balancer.explain()
    assert decided.move is not None and decided.move.vm_name == "b"


async def test_with_the_policy_off_the_dry_run_answers_and_nothing_moves(
    cluster: Database,
) -> None:
    balancer, _clock = _balancer(cluster, BalanceSettings(sustained_seconds=0))
    assert not balancer.enabled
    decided = await balancer.run_once()
    assert decided.move is not None and decided.move.vm_name == "c"
    assert _migrations(cluster) == [] and _entries(cluster) == []


def test_the_flags_set_the_policy_and_refuse_thresholds_that_make_no_sense() -> None:
    assert parse([])[0].balancing == BalanceSettings()  # off by default
    config, _level = parse(
        [
            "--balance-policy=evenly-distributed",
            "--balance-high-percent=70",
            "--balance-low-percent=30",
            "--balance-sustained-seconds=120",
            "--balance-interval-seconds=15",
        ]
    )
    assert config.balancing == BalanceSettings(BalancePolicy.EVENLY_DISTRIBUTED, 70, 30, 120, 15)
    with pytest.raises(SystemExit):
        parse(["--balance-high-percent=30"])
