"""A PostgreSQL password whose URL form carries percent-encoded characters:
the controller migrates its database and starts (alembic's options go through
ConfigParser, where % would start an interpolation)."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator

import pytest
from sqlalchemy import URL, make_url, text

from controller.app import Controller
from db.session import Database
from tests.support.controller_rig import config
from tests.support.real import POSTGRES_URL, skip_or_fail

PASSWORD = "p%40ss@w:rd/%x 100%"
"""Percent signs of its own, and characters the URL must percent-encode."""


def _as_postgres(sql: str) -> None:
    """Runs sql as the cluster's superuser (the tests' role may not create roles)."""
    if os.geteuid() != 0 or shutil.which("runuser") is None or shutil.which("psql") is None:
        skip_or_fail("creating a PostgreSQL role needs root (runuser -u postgres psql)")
    done = subprocess.run(
        ["runuser", "-u", "postgres", "--", "psql", "-v", "ON_ERROR_STOP=1", "-qXc", sql],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if done.returncode != 0:
        skip_or_fail(f"psql as postgres failed: {done.stderr.strip()}")


@pytest.fixture
def password_url(postgres_admin: object) -> Iterator[str]:
    """A database owned by a new role whose password is PASSWORD, reached over
    TCP with password authentication; both dropped after the test."""
    name = f"virtplane_test_{os.getpid()}_pw"
    literal = PASSWORD.replace("'", "''")
    _as_postgres(f"CREATE ROLE {name} LOGIN PASSWORD '{literal}'")
    try:
        _as_postgres(f"CREATE DATABASE {name} OWNER {name} TEMPLATE template0")
        try:
            base = make_url(POSTGRES_URL)
            yield URL.create(
                base.drivername,
                username=name,
                password=PASSWORD,
                host="127.0.0.1",
                port=5432,
                database=name,
            ).render_as_string(hide_password=False)
        finally:
            _as_postgres(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    finally:
        _as_postgres(f"DROP ROLE IF EXISTS {name}")


async def test_the_controller_starts_with_a_percent_encoded_password(password_url: str) -> None:
    assert "%25" in password_url and "%40" in password_url
    ctl = Controller(config(password_url))
    await ctl.start()
    try:
        tables = await ctl.db.run(
            lambda s: s.scalar(text("SELECT count(*) FROM information_schema.tables"))
        )
        assert tables
    finally:
        await ctl.stop(grace=0)
    db = Database(password_url)
    try:
        assert db.transaction(lambda s: s.scalar(text("SELECT current_user"))).endswith("_pw")
    finally:
        db.close()
