"""Opening the database and running units of work off the event loop.

Two engines are supported (see db/README.md):

- SQLite, the embedded default. Every transaction starts with BEGIN IMMEDIATE,
  so it holds the database's write lock from its first read to its commit:
  transactions never interleave, whatever the number of threads or processes.
- PostgreSQL, through psycopg 3. Transactions run at READ COMMITTED and do
  interleave; what must not is guarded by row locks (the revision counter,
  host placement) and by the version_id column of rows several writers
  touch. A transaction that loses such a race is run again from the start.

A unique constraint a concurrent transaction violated first (two creates of
one name, one MAC) is such a race too: the unit of work is run again, and
its own check then names the row that won (ALREADY_EXISTS). If running
again does not help, the violation is translated here, once, into
DuplicateRow (ALREADY_EXISTS), never left to become INTERNAL.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.orm.exc import StaleDataError

from virtplane_common.errors import AlreadyExists

T = TypeVar("T")

log = logging.getLogger(__name__)

# PostgreSQL's SQLSTATEs for "run the transaction again": serialization
# failure and deadlock detected.
_RETRY_SQLSTATES = frozenset({"40001", "40P01"})
_UNIQUE_VIOLATION = "23505"


class DuplicateRow(AlreadyExists):
    """A unique column's value is taken by another row (and running the unit
    of work again did not find it first)."""

    def __init__(self, what: str) -> None:
        super().__init__(f"{what} exists already")
        self.what = what


def is_unique_violation(exc: BaseException) -> bool:
    """Whether exc is a unique (or primary key) constraint's violation."""
    if not isinstance(exc, IntegrityError):
        return False
    if getattr(exc.orig, "sqlstate", None) == _UNIQUE_VIOLATION:
        return True
    return str(exc.orig).startswith("UNIQUE constraint failed")


def duplicate_row(exc: IntegrityError) -> DuplicateRow:
    """The DuplicateRow exc means, naming the row's table and the value where
    the engine says (PostgreSQL's detail: "Key (name)=(web-1) already exists.")."""
    diag = getattr(exc.orig, "diag", None)
    detail = getattr(diag, "message_detail", None)
    table = getattr(diag, "table_name", None)
    if table and detail:
        return DuplicateRow(f"a {table} row with {detail.removesuffix(' already exists.')}")
    message = str(exc.orig).removeprefix("UNIQUE constraint failed: ").splitlines()[0]
    return DuplicateRow(f"a row with the same {message}")


def is_sqlite(url: str) -> bool:
    return url.startswith("sqlite")


def make_engine(url: str) -> Engine:
    """An engine for url; SQLite gets foreign keys, WAL, a busy timeout and
    transactions that lock the database from their start."""
    if is_sqlite(url):
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})
        event.listen(engine, "connect", _sqlite_connect)
        event.listen(engine, "begin", _sqlite_begin)
        return engine
    return create_engine(url, pool_pre_ping=True)


def _sqlite_connect(dbapi_conn: Any, _record: Any) -> None:
    # The sqlite3 module would otherwise begin a transaction only before the
    # first INSERT/UPDATE/DELETE, leaving the reads before it outside of it;
    # _sqlite_begin emits the BEGIN instead.
    dbapi_conn.isolation_level = None
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.close()


def _sqlite_begin(conn: Connection) -> None:
    conn.exec_driver_sql("BEGIN IMMEDIATE")


def is_conflict(exc: BaseException) -> bool:
    """Whether exc means that a concurrent transaction got there first, so
    that running the unit of work again can succeed."""
    if isinstance(exc, StaleDataError) or is_unique_violation(exc):
        return True
    if isinstance(exc, DBAPIError):
        return getattr(exc.orig, "sqlstate", None) in _RETRY_SQLSTATES
    return False


class Database:
    """Runs each unit of work in its own transaction on a worker thread.

    A unit of work is a function of the session only, because it may run
    more than once: when it loses a race with a concurrent transaction (a
    row's version changed under it, a deadlock), it is run again, up to
    `attempts` times in all.

    SQLite gets one worker, as its transactions are serialised anyway;
    PostgreSQL gets a few.
    """

    def __init__(self, url: str, attempts: int = 5) -> None:
        self.url = url
        self.engine = make_engine(url)
        self.attempts = attempts
        self.sessions = sessionmaker(self.engine, expire_on_commit=False)
        workers = 1 if is_sqlite(url) else 4
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="db")

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    def transaction(self, work: Callable[[Session], T]) -> T:
        """Runs work(session) in one transaction, on the calling thread."""
        attempt = 1
        while True:
            try:
                with self.sessions() as session, session.begin():
                    return work(session)
            except (StaleDataError, DBAPIError) as exc:
                if attempt >= self.attempts or not is_conflict(exc):
                    if isinstance(exc, IntegrityError) and is_unique_violation(exc):
                        raise duplicate_row(exc) from exc
                    raise
                log.debug("transaction conflict (attempt %d), running it again: %s", attempt, exc)
                attempt += 1

    async def run(self, work: Callable[[Session], T]) -> T:
        """Runs work(session) in one transaction on a worker thread."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, functools.partial(self.transaction, work))

    def close(self) -> None:
        self._executor.shutdown(wait=True)
        self.engine.dispose()
