"""controller.lifecycle.stranded on each engine: the migrations to a host
that cannot be reached are marked (once) to end FAILED for that reason, and
end so when their source reports the VM running again; a migration that
landed, or one to another host, is left alone. With real guests and a
killed destination hostd: tests/e2e/test_migration_faults.py."""

from __future__ import annotations

import uuid

from sqlalchemy.orm import Session

from controller import operations
from controller.lifecycle.states import set_state
from controller.lifecycle.stranded import lost_destination, strand
from db.enums import OperationKind, OperationState, VmState
from db.models import Operation, Vm, utcnow
from db.session import Database
from tests.support import db_rig
from tests.support.db_rig import add_rows, host_row, vm_row

database = db_rig.database  # the fixture


def _migration(vm: str, destination: str) -> Operation:
    """A MIGRATE_VM operation the source accepted, booked on destination."""
    now = utcnow()
    return Operation(
        id=str(uuid.uuid4()),
        kind=OperationKind.MIGRATE_VM,
        state=OperationState.RUNNING,
        vm_id=f"id-{vm}",
        host_id=f"id-{destination}",
        error_code="",
        error_message="",
        created_at=now,
        scheduled_at=now,
        dispatched_at=now,
        accepted_at=now,
    )


def test_a_migration_to_a_lost_host_is_marked_once_and_fails_with_the_reason(
    database: Database,
) -> None:
    h1, h2, h3 = (host_row(n, 4096) for n in ("h1", "h2", "h3"))
    moving = vm_row("moving", state=VmState.MIGRATING_FROM, host="id-h1")
    landed = vm_row("landed", state=VmState.UP, host="id-h2")
    elsewhere = vm_row("elsewhere", state=VmState.MIGRATING_FROM, host="id-h1")
    ops = [_migration("moving", "h2"), _migration("landed", "h2"), _migration("elsewhere", "h3")]
    add_rows(database, h1, h2, h3, moving, landed, elsewhere)

    def add_ops(s: Session) -> None:
        s.add_all(ops)

    database.transaction(add_ops)

    found = database.transaction(lambda s: strand(s, "id-h2", "connection refused"))
    assert [(f.op_id, f.source.vm_id, f.source.host_id) for f in found] == [
        (ops[0].id, "id-moving", "id-h1")
    ]
    assert found[0].source.address == "h1:7070"
    assert database.transaction(lambda s: strand(s, "id-h2", "connection refused")) == []

    def back_on_source(s: Session) -> None:
        vm = s.get(Vm, "id-moving")
        assert vm is not None
        set_state(vm, VmState.UP, message="migration to h2:7070 cancelled")
        operations.progress(s, [vm])

    database.transaction(back_on_source)

    def states(s: Session) -> list[tuple[OperationState, str, str]]:
        rows = [s.get(Operation, op.id) for op in ops]
        return [(o.state, o.error_code, o.error_message) for o in rows if o is not None]

    reason = lost_destination("h2", "connection refused")
    assert reason == (
        "the destination host 'h2' cannot be reached (connection refused); "
        "the migration was cancelled"
    )
    assert database.transaction(states) == [
        (OperationState.FAILED, "ABORTED", reason),
        (OperationState.RUNNING, "", ""),
        (OperationState.RUNNING, "", ""),
    ]
