"""A migration's transfer in its operation (controller.migration_progress):
the source's reports converted, written into the VM's newest migration on
each engine, coalesced to one write a second with the end written at once,
and as the API shows them. The monitor applying a host's migration events:
tests/controller/test_migration_progress_api.py."""

from __future__ import annotations

import asyncio
import datetime as dt

import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from sqlalchemy.orm import Session
from virtplane.v1 import host_agent_service_pb2 as agent_pb2
from virtplane.v1 import operation_pb2

from controller import convert, operations
from controller.lifecycle import verbs
from controller.migration_progress import MigrationFeed, Transfer, percent, record, transfer_of
from controller.requests import Call
from db.enums import MigrationPhase, VmState
from db.models import Operation, Vm
from db.session import Database
from tests.support import db_rig
from tests.support.db_rig import add_rows, host_row, vm_row
from tests.support.waiting import until

database = db_rig.database  # the fixture

Pb = agent_pb2.MigrationProgress
NOW = dt.datetime(2026, 12, 5, 19, 0, tzinfo=dt.UTC)
GIB = 1 << 30


def _report(
    phase: int = Pb.PHASE_TRANSFERRING, remaining: int = GIB, message: str = "", **fields: int
) -> Pb:
    return Pb(
        vm_id="id-v",
        direction=Pb.DIRECTION_OUTGOING,
        phase=phase,  # type: ignore[arg-type]
        data_total_bytes=4 * GIB,
        data_remaining_bytes=remaining,
        message=message,
        **fields,  # type: ignore[arg-type]
    )


def _at(when: dt.datetime) -> Timestamp:
    ts = Timestamp()
    ts.FromDatetime(when)
    return ts


def test_a_source_report_becomes_a_transfer_and_a_destination_report_none() -> None:
    done = _report(Pb.PHASE_COMPLETED, 0, iterations=3, downtime_ms=41, bytes_per_second=7)
    done.end_time.CopyFrom(_at(NOW))
    transfer = transfer_of(done)
    assert transfer == Transfer(
        vm_id="id-v",
        phase=MigrationPhase.SWITCHED_OVER,
        total_bytes=4 * GIB,
        remaining_bytes=0,
        bytes_per_second=7,
        iterations=3,
        downtime_ms=41,
        ended=NOW,
    )
    assert transfer.ended_now
    failed = transfer_of(_report(Pb.PHASE_FAILED))
    assert failed is not None and failed.phase is MigrationPhase.FAILED and failed.ended_now
    assert transfer_of(_report()) == Transfer("id-v", MigrationPhase.TRANSFERRING, 4 * GIB, 0, GIB)
    incoming = _report(Pb.PHASE_COMPLETED)
    incoming.direction = Pb.DIRECTION_INCOMING
    assert transfer_of(incoming) is None
    assert transfer_of(_report(Pb.PHASE_UNSPECIFIED)) is None


@pytest.mark.parametrize(
    ("phase", "total", "remaining", "expected"),
    [
        (MigrationPhase.TRANSFERRING, 4 * GIB, GIB, 75),
        (MigrationPhase.TRANSFERRING, 0, 0, 0),  # nothing measured yet
        (MigrationPhase.TRANSFERRING, GIB, 2 * GIB, 0),  # dirtied faster than sent
        (MigrationPhase.TRANSFERRING, 3, 1, 66),
        (MigrationPhase.SWITCHED_OVER, 4 * GIB, GIB, 100),
        (MigrationPhase.FAILED, 4 * GIB, GIB, 75),
    ],
)
def test_percent(phase: MigrationPhase, total: int, remaining: int, expected: int) -> None:
    assert percent(phase, total, remaining) == expected


@pytest.fixture
def migrating(database: Database) -> str:
    """v migrates from h1 to h2; its operation's id."""
    add_rows(
        database,
        host_row("h1", 4096),
        host_row("h2", 4096),
        vm_row("v", 512, state=VmState.MIGRATING_FROM, host="id-h1"),
    )

    def begin(s: Session) -> str:
        vm = s.get(Vm, "id-v")
        assert vm is not None
        return operations.begin(s, verbs.MIGRATE.kind, vm, Call("MigrateVm"), host_id="id-h2").id

    return database.transaction(begin)


def _record(database: Database, report: Pb, host: str = "id-h1", at: dt.datetime = NOW) -> bool:
    transfer = transfer_of(report)
    assert transfer is not None
    return database.transaction(lambda s: record(s, host, transfer, at))


def _operation(database: Database, op_id: str) -> operation_pb2.Operation:
    def read(s: Session) -> operation_pb2.Operation:
        op = s.get(Operation, op_id)
        assert op is not None
        return convert.operation(op)

    return database.transaction(read)


def test_the_operation_records_the_transfer_then_the_switch_over(
    database: Database, migrating: str
) -> None:
    assert not _operation(database, migrating).HasField("migration")
    assert _record(database, _report(remaining=3 * GIB, iterations=1, bytes_per_second=99))
    later = NOW + dt.timedelta(seconds=1)
    assert _record(database, _report(remaining=GIB, iterations=2), at=later)
    op = _operation(database, migrating)
    assert op.migration == operation_pb2.MigrationTransfer(
        phase=operation_pb2.MigrationTransfer.PHASE_TRANSFERRING,
        percent=75,
        data_total_bytes=4 * GIB,
        data_remaining_bytes=GIB,
        iterations=2,
        update_time=_at(later),
    )
    assert op.phases.transferring_time == _at(NOW)  # the first report's
    assert not op.phases.HasField("switched_over_time")

    done = _report(Pb.PHASE_COMPLETED, 0, iterations=3, downtime_ms=41)
    done.end_time.CopyFrom(_at(later))
    assert _record(database, done, at=later + dt.timedelta(seconds=1))
    op = _operation(database, migrating)
    assert op.migration.phase == operation_pb2.MigrationTransfer.PHASE_SWITCHED_OVER
    assert (op.migration.percent, op.migration.downtime_ms, op.migration.iterations) == (100, 41, 3)
    assert op.phases.switched_over_time == _at(later)  # the source's clock
    # Nothing after the end, and nothing from the destination's side.
    assert not _record(database, _report(remaining=GIB))
    assert not _record(database, done, host="id-h2")
    assert _operation(database, migrating).migration.downtime_ms == 41


def test_the_end_of_a_transfer_reported_after_the_operation_ended_is_recorded(
    database: Database, migrating: str
) -> None:
    database.transaction(lambda s: operations.failed(s, migrating, "ABORTED", "gone"))
    assert _record(database, _report(Pb.PHASE_FAILED, message="failed: refused"))
    op = _operation(database, migrating)
    assert op.done and op.migration.phase == operation_pb2.MigrationTransfer.PHASE_FAILED
    assert op.migration.message == "failed: refused"


def test_a_report_without_a_migration_is_left_out(database: Database) -> None:
    add_rows(database, host_row("h1", 4096), vm_row("v", state=VmState.UP, host="id-h1"))
    assert not _record(database, _report())


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


async def test_the_feed_writes_once_a_second_and_the_end_at_once(
    database: Database, migrating: str
) -> None:
    clock = _Clock()
    feed = MigrationFeed("id-h1", database, asyncio.Lock(), interval=1.0, monotonic=clock)
    for i in range(10):
        await feed.offer(_report(remaining=GIB - i, iterations=i), NOW)
    assert feed.coalescer.writes == 1  # the first, at once; the rest wait
    assert _operation(database, migrating).migration.iterations == 0
    clock.now += 1.0  # the interval is up: the latest is written
    written = await until(lambda: _operation(database, migrating), lambda o: o.migration.iterations)
    assert written.migration.iterations == 9 and feed.coalescer.writes == 2
    await feed.offer(_report(iterations=10), NOW)
    await feed.offer(_report(Pb.PHASE_COMPLETED, 0, iterations=11, downtime_ms=5), NOW)
    # Within the interval, yet the end is written at once (the one it replaced is not).
    assert (feed.coalescer.writes, feed.coalescer.coalesced) == (3, 9)
    op = _operation(database, migrating)
    assert (op.migration.iterations, op.migration.downtime_ms) == (11, 5)
    await feed.offer(_report(Pb.PHASE_COMPLETED, 0), NOW)
    incoming = _report()
    incoming.direction = Pb.DIRECTION_INCOMING
    await feed.offer(incoming, NOW)  # not the source's: not offered
    await feed.close()
    assert feed.coalescer.writes == 4
    assert _operation(database, migrating).migration.downtime_ms == 5
