"""The database's tests' rig: the `database` fixture (a database migrated to
head, on each engine; tests/db/conftest.py and the controller's retention
tests take it from here), a host and a VM row, adding rows, a transaction
kept open on purpose, and a look at whether another one waits on it
meanwhile."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

import pytest
from sqlalchemy.orm import Session

from db import migrate
from db.enums import HostState, VmState
from db.models import Host, Vm
from db.session import Database

T = TypeVar("T")
WAIT = 30.0  # only reached when something is broken
BLOCKED = 0.5  # how long a transaction that must wait is watched


@pytest.fixture
def database(database_url: str) -> Iterator[Database]:
    """A database migrated to head, on each engine (see database_url)."""
    db = Database(database_url)
    migrate.upgrade(db.engine)
    yield db
    db.close()


def host_row(name: str, memory: int, cpus: int = 8) -> Host:
    """An UP host of cpus CPUs and memory MiB, with id id-NAME."""
    return Host(
        id=f"id-{name}",
        name=name,
        address=f"{name}:7070",
        state=HostState.UP,
        cpus=cpus,
        memory_total_mib=memory,
    )


def vm_row(
    name: str,
    memory: int = 256,
    *,
    state: VmState = VmState.DOWN,
    host: str | None = None,
    revision: int = 0,
) -> Vm:
    """A VM of 1 vCPU, with id id-NAME (DOWN and on no host, by default)."""
    return Vm(
        id=f"id-{name}",
        name=name,
        vcpus=1,
        memory_mib=memory,
        kernel_path="/k",
        state=state,
        host_id=host,
        revision=revision,
    )


def add_rows(database: Database, *rows: Host | Vm) -> None:
    """Adds the rows in one transaction, in their order."""

    def work(s: Session) -> None:
        for row in rows:
            s.add(row)
            s.flush()  # hosts before the VMs that may refer to them

    database.transaction(work)


def hold_open(
    pool: ThreadPoolExecutor, database: Database, work: Callable[[Session], T]
) -> tuple[Future[T], threading.Event]:
    """Runs work in a transaction that stays open until the returned event
    is set; returns once work has run."""
    done, release = threading.Event(), threading.Event()

    def hold(s: Session) -> T:
        value = work(s)
        done.set()
        assert release.wait(WAIT), "never released"
        return value

    future = pool.submit(database.transaction, hold)
    assert done.wait(WAIT), "the held transaction did not get going"
    return future, release


def still_waiting(future: Future[Any]) -> bool:
    """Whether future is still not done BLOCKED seconds from now."""
    time.sleep(BLOCKED)
    return not future.done()
