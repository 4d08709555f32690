"""A host's event that moves a VM, and a verb recording that the host
accepted the VM's operation, run in two transactions at once on
PostgreSQL: whichever order they take, the operation ends. (On SQLite
transactions never interleave.)"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlalchemy.orm import Session

from controller import audit, operations
from controller.audit import seen
from controller.lifecycle.states import set_state
from controller.requests import Call
from db import migrate
from db.enums import OperationKind, OperationState, VmState
from db.models import Operation, Vm, utcnow
from db.session import Database
from tests.support.db_rig import WAIT, add_rows, hold_open, host_row, still_waiting, vm_row


@pytest.fixture
def pool() -> Iterator[ThreadPoolExecutor]:
    with ThreadPoolExecutor(max_workers=4) as executor:
        yield executor


@pytest.fixture
def tracked(postgres_url: str) -> Iterator[tuple[Database, str]]:
    """A database with a VM powering down and its STOP_VM operation not yet
    accepted."""
    db = Database(postgres_url)
    migrate.upgrade(db.engine)
    vm = vm_row("v")
    vm.state, vm.host_id = VmState.POWERING_DOWN, "id-h"
    add_rows(db, host_row("h", 1024), vm)

    def begin(s: Session) -> str:
        row = s.get_one(Vm, "id-v")
        return operations.begin(s, OperationKind.STOP_VM, row, Call("StopVm")).id

    yield db, db.transaction(begin)
    db.close()


def _event_down(s: Session) -> None:  # what the monitor does with the host's DOWN event
    vm = s.get_one(Vm, "id-v")
    found = seen([vm])
    set_state(vm, VmState.DOWN)
    # What VmStore.stamp() calls before it writes the change.
    operations.progress(s, audit.vm_changes(s, [vm], found))
    s.flush()


def _accept(op_id: str):  # what the verb does once the host answered
    def work(s: Session) -> None:
        vm = s.get_one(Vm, "id-v")
        operations.lock_vm(s, vm)
        operations.accepted(s, op_id, utcnow(), vm)
        s.flush()

    return work


def _state(db: Database, op_id: str) -> OperationState:
    return db.transaction(lambda s: s.get_one(Operation, op_id).state)


def test_an_acceptance_after_an_uncommitted_event_waits_and_sees_it(
    tracked: tuple[Database, str], pool: ThreadPoolExecutor
) -> None:
    db, op_id = tracked
    event, release = hold_open(pool, db, _event_down)
    acceptance = pool.submit(db.transaction, _accept(op_id))
    assert still_waiting(acceptance)  # on the VM's row
    release.set()
    event.result(WAIT)
    acceptance.result(WAIT)
    assert _state(db, op_id) is OperationState.SUCCEEDED


def test_an_event_after_an_uncommitted_acceptance_waits_and_sees_it(
    tracked: tuple[Database, str], pool: ThreadPoolExecutor
) -> None:
    db, op_id = tracked
    acceptance, release = hold_open(pool, db, _accept(op_id))
    event = pool.submit(db.transaction, _event_down)
    assert still_waiting(event)  # on the operation's row, or the VM's
    release.set()
    acceptance.result(WAIT)
    event.result(WAIT)
    assert _state(db, op_id) is OperationState.SUCCEEDED
