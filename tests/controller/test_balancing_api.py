"""ExplainBalancing on the wire and `virtplane host balance-explain`, on a
controller of each engine: the policy and thresholds it runs with, the move
it would make now with its reason, every host's load; a dry run moves
nothing, with the policy off as on. With the policy on, the controller's own
loop asks the migration (it waits its turn under a limit of none at once, so
no hostd is needed), its operation and audit entry seen through the API.
Who may call it: tests/controller/test_auth.py (a read: every role)."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from unittest import mock

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session
from virtplane.v1 import host_service_pb2 as host_api
from virtplane.v1 import operation_pb2
from virtplane.v1 import operation_service_pb2 as op_api

from controller.balancing import BalancePolicy, BalanceSettings
from controller.balancing_loop import BALANCING
from controller.lifecycle.migration_limits import MigrationLimits
from db.enums import VmState
from db.models import Operation
from tests.support.controller_rig import Rig, close_rig, config, open_rig
from tests.support.db_rig import host_row, vm_row
from tests.support.waiting import until
from virtplane_client.cli.main import parser, run_command

REASON = "h1 memory 91% > 80% for 0 s; h2 at 20% < 40%; moving c (1500 MiB)"


async def _rig(database_url: str, settings: BalanceSettings, **overrides: object) -> Rig:
    rig = await open_rig(config(database_url, balancing=settings, **overrides))

    def rows(s: Session) -> None:
        s.add_all([host_row("h1", 10000), host_row("h2", 10000)])
        s.flush()
        sizes = {"a": 4000, "b": 2000, "c": 1500, "d": 1000, "e": 600}
        s.add_all(vm_row(n, m, state=VmState.UP, host="id-h1") for n, m in sizes.items())
        s.add(vm_row("x", 2000, state=VmState.UP, host="id-h2"))

    rig.controller.db.transaction(rows)
    return rig


@pytest.fixture
async def off(database_url: str) -> AsyncIterator[Rig]:
    """The policy off; h1 at 91% of its memory, h2 at 20%."""
    rig = await _rig(database_url, BalanceSettings(sustained_seconds=0))
    yield rig
    await close_rig(rig)


def _operations(rig: Rig) -> int:
    return rig.controller.db.transaction(
        lambda s: s.scalar(select(func.count()).select_from(Operation)) or 0
    )


async def test_the_dry_run_says_what_the_balancer_would_do_and_why(off: Rig) -> None:
    reply = await off.hosts.ExplainBalancing(host_api.ExplainBalancingRequest())
    assert reply.policy == host_api.BALANCING_POLICY_OFF
    assert (reply.high_percent, reply.low_percent, reply.sustained_seconds) == (80, 40, 0)
    assert reply.reason == REASON
    move = reply.move
    assert (move.vm_id, move.vm_name) == ("id-c", "c")
    assert (move.source_host_name, move.destination_host_name) == ("h1", "h2")
    assert (move.source_host_id, move.destination_host_id) == ("id-h1", "id-h2")
    loads = {h.host_name: h for h in reply.hosts}
    assert (loads["h1"].memory_percent, loads["h1"].over) == (91.0, True)
    assert (loads["h2"].memory_percent, loads["h2"].cpu_percent, loads["h2"].over) == (
        20.0,
        12.5,
        False,
    )
    assert _operations(off) == 0  # nothing moved


async def test_the_cli_shows_the_loads_the_move_and_the_reason(
    off: Rig, capsys: pytest.CaptureFixture[str]
) -> None:
    with mock.patch.dict(os.environ, off.environment()):
        await run_command(parser().parse_args(["host", "balance-explain"]))
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["HOST", "MEMORY", "CPU", "OVER", "FOR"]
    assert lines[1].split()[:3] == ["h1", "91%", "62%"]
    assert lines[2].split() == ["h2", "20%", "12%", "-"]
    assert lines[3:] == [
        "policy: off (the balancer acts on nothing); over 80% for 0 s, to hosts under 40%",
        "would: migrate c from h1 to h2",
        f"why: {REASON}",
    ]


async def test_with_the_policy_on_the_dry_run_still_moves_nothing(database_url: str) -> None:
    on = BalanceSettings(BalancePolicy.EVENLY_DISTRIBUTED, 70, 30, 600, interval_seconds=3600)
    rig = await _rig(database_url, on)
    try:
        reply = await rig.hosts.ExplainBalancing(host_api.ExplainBalancingRequest())
        assert reply.policy == host_api.BALANCING_POLICY_EVENLY_DISTRIBUTED
        assert (reply.high_percent, reply.low_percent, reply.sustained_seconds) == (70, 30, 600)
        assert not reply.HasField("move")
        assert reply.reason == "h1 memory 91% > 70% for 0 s, not yet 600 s"
        assert _operations(rig) == 0
    finally:
        await close_rig(rig)


async def test_with_the_policy_on_the_loop_asks_the_migration_and_records_why(
    database_url: str,
) -> None:
    on = BalanceSettings(
        BalancePolicy.EVENLY_DISTRIBUTED, sustained_seconds=0, interval_seconds=0.1
    )
    rig = await _rig(database_url, on, migration_limits=MigrationLimits(outgoing_per_host=0))
    try:

        async def migrations() -> list[operation_pb2.Operation]:
            reply = await rig.ops.ListOperations(op_api.ListOperationsRequest())
            return [
                o for o in reply.operations if o.kind == operation_pb2.Operation.KIND_MIGRATE_VM
            ]

        [op] = await until(migrations, what="the balancer's migration")
        assert op.vm_id == "id-c" and op.message.startswith("waiting: ")

        async def entries() -> list[op_api.Event]:
            events = await rig.ops.ListEvents(op_api.ListEventsRequest(vm_id="id-c"))
            return [e for e in events.events if e.kind == BALANCING]

        # Written once the migration was asked, in a transaction of its own.
        [entry] = await until(entries, what="the balancer's audit entry")
        # The first look found h1 over: with sustained 0 s, it moved at once.
        assert (entry.operation_id, entry.message) == (op.id, REASON)
        # It waits its turn: the loop's next looks ask nothing more.
        explained = await rig.hosts.ExplainBalancing(host_api.ExplainBalancingRequest())
        assert explained.reason == "a balancing migration is under way: c"
        assert len(await migrations()) == 1
    finally:
        await close_rig(rig)
