"""Pruning request ids, the audit log and ended operations; the watches'
resume floor follows the deletions pruned. On each engine."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from controller.retention import Retention, prune
from db import repositories as repo
from db.enums import OperationKind, OperationState
from db.models import ApiRequest, Event, Operation
from db.session import Database
from tests.support import db_rig

NOW = dt.datetime(2026, 6, 1, 12, 0, tzinfo=dt.UTC)
DAY = dt.timedelta(days=1)

database = db_rig.database  # the fixture


def _op(op_id: str, state: OperationState, done: dt.datetime | None) -> Operation:
    return Operation(
        id=op_id,
        kind=OperationKind.STOP_VM,
        state=state,
        vm_id="v",
        created_at=NOW - 30 * DAY,
        done_at=done,
        error_code="",
        error_message="",
    )


def test_prune_keeps_what_is_recent_and_running(database: Database) -> None:
    def fill(s: Session) -> None:
        s.add_all(
            [
                ApiRequest(request_id="old", method="StartVm", fingerprint="f", result_id="",
                           created_at=NOW - 2 * DAY),
                ApiRequest(request_id="new", method="StartVm", fingerprint="f", result_id="",
                           created_at=NOW - dt.timedelta(hours=1)),
                Event(time=NOW - 8 * DAY, kind=repo.VM_DELETED, vm_id="a", message="", revision=5),
                Event(time=NOW - 8 * DAY, kind="VM_STATE", vm_id="b", message=""),
                Event(time=NOW - 1 * DAY, kind=repo.VM_DELETED, vm_id="c", message="", revision=9),
                _op("ended-long-ago", OperationState.SUCCEEDED, NOW - 8 * DAY),
                _op("ended-lately", OperationState.FAILED, NOW - DAY),
                _op("running", OperationState.RUNNING, None),
            ]
        )  # fmt: skip

    database.transaction(fill)
    pruned = database.transaction(lambda s: prune(s, Retention(), NOW))
    assert (pruned.request_ids, pruned.events, pruned.operations) == (1, 2, 1)
    # The deletion at revision 5 is gone: a watch can resume after 5, not before.
    assert pruned.resume_floor == 5 == database.transaction(repo.resume_floor)

    def left(s: Session) -> tuple[list[str], list[str | None], list[str]]:
        return (
            list(s.scalars(select(ApiRequest.request_id))),
            list(s.scalars(select(Event.vm_id))),
            sorted(s.scalars(select(Operation.id))),
        )

    assert database.transaction(left) == (["new"], ["c"], ["ended-lately", "running"])
    # Pruning again changes nothing, and the floor never goes back.
    again = database.transaction(lambda s: prune(s, Retention(), NOW))
    assert (again.events, again.resume_floor) == (0, 5)
    assert database.transaction(lambda s: s.scalar(select(func.count(Event.id)))) == 1
