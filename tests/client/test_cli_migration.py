"""`virtplane vm migrate --wait`: a migration's transfer rendered, and
followed live through the controller rig (the source's events fed to its
monitor as its event stream would: nothing migrates on the test driver)
until the operation ends and its switch-over is reported."""

from __future__ import annotations

import asyncio
import datetime as dt

import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from sqlalchemy.orm import Session
from virtplane.v1 import operation_pb2, vm_pb2

from controller import operations
from db.enums import OperationState as Ended
from db.models import Operation as OperationRow
from tests.support.controller_rig import Rig
from tests.support.migration_operation import Pb, migrating
from tests.support.served import Served
from tests.support.waiting import until
from virtplane_client import (
    AsyncClient,
    MigrationPhase,
    MigrationTransfer,
    OperationState,
    convert,
    errors,
)
from virtplane_client.cli import format as fmt
from virtplane_client.cli import migration
from virtplane_client.cli.main import parser

T0 = dt.datetime(2026, 1, 1, 12, 0, 0, tzinfo=dt.UTC)
GIB = 1 << 30


def _at(seconds: float) -> Timestamp:
    ts = Timestamp()
    ts.FromDatetime(T0 + dt.timedelta(seconds=seconds))
    return ts


def test_a_transfer_reads_as_its_progress_or_its_end() -> None:
    t = MigrationTransfer(
        MigrationPhase.TRANSFERRING,
        percent=62,
        data_total_bytes=4 * GIB,
        data_remaining_bytes=3 * GIB // 2,
        bytes_per_second=350 << 20,
        iterations=2,
    )
    assert fmt.transfer(t) == (
        "transferring 62%, 1.5 GiB of 4.0 GiB left, iteration 2, 350.0 MiB/s"
    )
    done = MigrationTransfer(
        MigrationPhase.SWITCHED_OVER, percent=100, iterations=1, elapsed_ms=2100, downtime_ms=41
    )
    assert fmt.transfer(done) == "switched over after 1 iteration, 2100 ms; downtime 41 ms"
    post_copy = MigrationTransfer(
        MigrationPhase.TRANSFERRING,
        percent=97,
        data_total_bytes=GIB,
        data_remaining_bytes=30 << 20,
        bytes_per_second=8 << 20,
        iterations=40,
        message="switched to post-copy: stalled: data remaining has not shrunk below 28 MiB"
        " for 30 s",
    )
    assert fmt.transfer(post_copy) == (
        "transferring 97%, 30.0 MiB of 1.0 GiB left, iteration 40, 8.0 MiB/s (switched to"
        " post-copy: stalled: data remaining has not shrunk below 28 MiB for 30 s)"
    )
    failed = MigrationTransfer(MigrationPhase.CANCELLED, percent=3, message="cancelled")
    assert fmt.transfer(failed) == "cancelled at 3%: cancelled"
    assert fmt.size(512) == "512 B" and fmt.size(1536) == "1.5 KiB"


def test_an_operation_shows_its_transfer_and_the_migration_phases() -> None:
    op = operation_pb2.Operation(
        id="op-1",
        kind=operation_pb2.Operation.KIND_MIGRATE_VM,
        vm_id="v1",
        state=operation_pb2.Operation.STATE_SUCCEEDED,
        phases=operation_pb2.OperationPhases(
            create_time=_at(0),
            accepted_time=_at(0.1),
            transferring_time=_at(1),
            switched_over_time=_at(2.5),
            up_time=_at(2.6),
            done_time=_at(2.6),
        ),
        migration=operation_pb2.MigrationTransfer(
            phase=operation_pb2.MigrationTransfer.PHASE_SWITCHED_OVER,
            percent=100,
            iterations=3,
            elapsed_ms=2400,
            downtime_ms=86,
            update_time=_at(2.7),
        ),
    )
    read = convert.operation(op)
    assert read.migration is not None and read.migration.update_time == (T0 + dt.timedelta(0, 2.7))
    lines = fmt.operation(read).splitlines()
    assert "transfer:  switched over after 3 iterations, 2400 ms; downtime 86 ms" in lines
    labels = [line.split()[0] for line in lines if line.startswith("  ")]
    assert labels == ["created", "accepted", "transferring", "switchover", "up", "done"]
    plain = operation_pb2.Operation(id="op-2", phases=op.phases)
    assert convert.operation(plain).migration is None
    assert not [line for line in fmt.operation(convert.operation(plain)).splitlines()
                if line.startswith("transfer:")]  # fmt: skip


def test_explain_takes_migration() -> None:
    args = parser().parse_args(["vm", "explain", "web", "--migration"])
    assert (args.vm, args.migration) == ("web", True)
    assert parser().parse_args(["vm", "explain", "web"]).migration is False


async def test_follow_shows_the_progress_until_the_switch_over_is_reported(
    rig: Rig, client: AsyncClient, test_hostd: Served, boot: vm_pb2.BootSource
) -> None:
    moving = await migrating(rig, test_hostd, boot)
    shown: list[str] = []
    begun = await client.operations.get(moving.op_id)
    following = asyncio.create_task(migration.follow(client, begun, 120, shown.append, 0.05))

    await moving.report(Pb.PHASE_TRANSFERRING, 600, iterations=1, bytes_per_second=2048)
    await until(lambda: list(shown), lambda s: len(s) == 1)
    assert shown == ["transferring 40%, 600 B of 1000 B left, iteration 1, 2.0 KiB/s"]

    def landed(s: Session) -> None:
        # The VM ran on the destination before its source's report came in.
        row = s.get(OperationRow, moving.op_id)
        assert row is not None
        row.state, row.done_at = Ended.SUCCEEDED, row.created_at

    rig.controller.db.transaction(landed)
    assert not following.done()  # waiting for the switch-over's report
    await moving.report(Pb.PHASE_COMPLETED, 0, iterations=2, elapsed_ms=900, downtime_ms=12)
    op = await asyncio.wait_for(following, 60)
    assert op.state is OperationState.SUCCEEDED and op.migration is not None
    assert op.migration.downtime_ms == 12
    assert shown[-1] == "switched over after 2 iterations, 900 ms; downtime 12 ms"
    await client.vms.stop(moving.name)


async def test_follow_waits_for_how_a_transfer_the_operation_outlived_ended(
    rig: Rig, client: AsyncClient, test_hostd: Served, boot: vm_pb2.BootSource
) -> None:
    moving = await migrating(rig, test_hostd, boot)
    await moving.report(Pb.PHASE_TRANSFERRING, 600, iterations=1)
    why = "the migration was cancelled"
    rig.controller.db.transaction(lambda s: operations.failed(s, moving.op_id, "CANCELLED", why))
    ended = await client.operations.get(moving.op_id)
    assert ended.done and ended.migration is not None
    shown: list[str] = []
    following = asyncio.create_task(migration.follow(client, ended, 120, shown.append, 0.05))
    await until(lambda: list(shown), lambda s: len(s) == 1)
    assert not following.done()  # the transfer's end is not reported yet
    await moving.report(Pb.PHASE_CANCELLED, 600, "migration to h2 cancelled", iterations=1)
    op = await asyncio.wait_for(following, 60)
    assert op.migration is not None and op.migration.phase is MigrationPhase.CANCELLED
    assert shown == [
        "transferring 40%, 600 B of 1000 B left, iteration 1, 0 B/s",
        "cancelled at 40%: migration to h2 cancelled",
    ]
    await client.vms.stop(moving.name)


async def test_a_policy_given_reaches_the_controller(client: AsyncClient) -> None:
    with pytest.raises(errors.InvalidArgument, match=r"policy\.stall_seconds: -2 is negative"):
        await client.vms.migrate("any", stall_seconds=-2, post_copy=True)
