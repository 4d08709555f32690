"""Databases for the tests on the PostgreSQL server: an admin engine that
creates them, a fresh database per test (or per benchmark run), dropped
after, and the clean-up of those a dead test run left behind."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Engine, create_engine, make_url, text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.pool import NullPool

from tests.support.real import POSTGRES_URL, skip_or_fail

TEST_DB_PREFIX = "virtplane_test_"
# Dropping a test database WITH (FORCE) ends every session in it, autovacuum
# workers included; ending another role's session takes pg_signal_backend
# (db/pg-setup.sh grants it), checked up front rather than at a teardown.
_MAY_END_SESSIONS = text(
    "SELECT rolsuper OR pg_has_role(current_user, 'pg_signal_backend', 'MEMBER')"
    " FROM pg_roles WHERE rolname = current_user"
)


def admin_engine(url: str = POSTGRES_URL) -> Engine:
    """An autocommit engine on the server's maintenance database, for creating
    and dropping databases."""
    return create_engine(make_url(url), isolation_level="AUTOCOMMIT", poolclass=NullPool)


def usable_admin(url: str = POSTGRES_URL) -> Engine:
    """admin_engine, checked: skips (or fails) the test when the server is not
    reachable or the role may not create databases; drops the leftovers of
    dead test runs."""
    try:
        admin = admin_engine(url)
        with admin.connect() as conn:
            can_create = conn.scalar(
                text("SELECT rolcreatedb FROM pg_roles WHERE rolname = current_user")
            )
            can_end = conn.scalar(_MAY_END_SESSIONS)
    except (SQLAlchemyError, ImportError) as exc:
        first = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
        skip_or_fail(f"PostgreSQL at {make_url(url)} is not reachable ({first}); run `make setup`")
    if not can_create:
        skip_or_fail(f"the role at {make_url(url)} may not create databases; run `make setup`")
    if not can_end:
        skip_or_fail(
            f"the role at {make_url(url)} may not end other roles' sessions (autovacuum's)"
            " in its test databases, so DROP DATABASE ... WITH (FORCE) can be refused;"
            " run `make postgres` (it grants pg_signal_backend)"
        )
    drop_leftovers(admin)
    return admin


@contextmanager
def fresh_database(admin: Engine, prefix: str = TEST_DB_PREFIX) -> Iterator[str]:
    """The URL of a new, empty database, dropped afterwards. Its name carries
    this process's pid, for drop_leftovers."""
    name = f"{prefix}{os.getpid()}_{uuid.uuid4().hex[:12]}"
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}" TEMPLATE template0'))
    try:
        yield admin.url.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            # FORCE: a daemon under test may still hold connections.
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def drop_leftovers(admin: Engine) -> None:
    """Drops the test databases of test runs that died before their clean-up."""
    with admin.connect() as conn:
        names = conn.scalars(
            text("SELECT datname FROM pg_database WHERE datname LIKE :p"),
            {"p": TEST_DB_PREFIX + "%"},
        ).all()
        for name in names:
            pid = name.removeprefix(TEST_DB_PREFIX).split("_", 1)[0]
            if pid.isdigit() and not _pid_alive(int(pid)):
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
