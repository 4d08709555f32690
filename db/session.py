"""Opening the database and running units of work off the event loop.

Two engines are supported (see db/README.md):

- SQLite, the embedded default. Every transaction starts with BEGIN IMMEDIATE,
  so it holds the database's write lock from its first read to its commit:
  transactions never interleave, whatever the number of threads or processes.
- PostgreSQL, through psycopg 3. Transactions run at READ COMMITTED and do
  interleave; what must not is guarded by row locks (the revision counter,
  host placement) and by the version_id column of rows several writers
  touch. A transaction that loses such a race is run again from the start.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.orm.exc import StaleDataError

T = TypeVar("T")

log = logging.getLogger(__name__)

# PostgreSQL's SQLSTATEs for "run the transaction again": serialization
# failure and deadlock detected.
_RETRY_SQLSTATES = frozenset({"40001", "40P01"})


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
    if isinstance(exc, StaleDataError):
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
