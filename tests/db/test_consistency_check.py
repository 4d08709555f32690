"""The database check the API's property test runs after each case
(tests.support.consistency): silent on sound rows, and naming each broken
invariant, on each engine."""

from __future__ import annotations

from sqlalchemy.orm import Session

from db import repositories as repo
from db.enums import OperationKind, OperationState, VmState
from db.models import Operation
from db.session import Database
from tests.support.consistency import problems
from tests.support.db_rig import add_rows, host_row, vm_row


def _problems(database: Database) -> list[str]:
    return database.transaction(problems)


def _take_revisions(database: Database, count: int) -> None:
    database.transaction(lambda s: repo.allocate_revisions(s, count))


def test_sound_rows_have_no_problems(database: Database) -> None:
    _take_revisions(database, 2)
    add_rows(
        database,
        host_row("h1", memory=1024),
        vm_row("web", 512, state=VmState.UP, host="id-h1", revision=1),
        vm_row("db", 512, revision=2),
    )
    assert _problems(database) == []


def test_each_broken_invariant_is_named(database: Database) -> None:
    _take_revisions(database, 2)
    add_rows(
        database,
        host_row("h1", memory=1024),
        vm_row("web", 768, state=VmState.UP, host="id-h1", revision=1),
        vm_row("api", 512, state=VmState.POWERING_UP, host="id-h1", revision=2),
        vm_row("db", 256, host="id-h1", revision=2),
        vm_row("idle", 256, state=VmState.UP, revision=3),
    )

    def orphan(session: Session) -> None:
        session.add(
            Operation(
                id="op-1",
                kind=OperationKind.START_VM,
                state=OperationState.RUNNING,
                vm_id="id-gone",
            )
        )

    database.transaction(orphan)
    assert sorted(_problems(database)) == sorted(
        [
            "VM revision 2 held 2 times",
            "VM db is DOWN but placed on host id-h1",
            "VM idle is UP on no host",
            "host h1 booked 1280 MiB of 1024",
            "running operation op-1 of missing VM id-gone",
            "VM idle has revision 3 above the counter 2",
        ]
    )
