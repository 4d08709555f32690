from __future__ import annotations

from sqlalchemy import inspect

from db import migrate
from db.session import Database


def test_upgrade_leaves_no_drift_between_models_and_migrations(database: Database) -> None:
    migrate.check(database.engine)  # raises when the models and migrations differ


def test_downgrade_then_upgrade_round_trip(database: Database) -> None:
    migrate.downgrade(database.engine, "base")
    assert set(inspect(database.engine).get_table_names()) <= {"alembic_version"}
    migrate.upgrade(database.engine)
    tables = set(inspect(database.engine).get_table_names())
    assert {"hosts", "vms", "vm_nics", "guest_facts"} <= tables
    migrate.check(database.engine)
