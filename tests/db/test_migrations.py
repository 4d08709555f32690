from __future__ import annotations

from sqlalchemy import inspect, text

from db import migrate
from db import repositories as repo
from db.models import DEFAULT_CLUSTER_ID
from db.session import Database

_VM_INSERT = (
    "INSERT INTO vms (id, name, vcpus, memory_mib, kernel_path, initrd_path,"
    " cmdline, state, exit_reason, status_message, revision, state_changed_at,"
    " created_at, version_id) VALUES (:n, :n, 1, 64, '/k', '', '', 'DOWN',"
    " 'NONE', '', :r, CURRENT_TIMESTAMP, CURRENT_TIMESTAMP, 1)"
)

TABLES = {
    "hosts",
    "vms",
    "vm_nics",
    "guest_facts",
    "revision_counter",
    "clusters",
    "vm_disks",
    "events",
    "operations",
    "api_requests",
    "affinity_groups",
    "affinity_group_vms",
    "principals",
    "api_tokens",
    "enrollment_tokens",
    "revoked_certificates",
}


def test_upgrade_leaves_no_drift_between_models_and_migrations(database: Database) -> None:
    migrate.check(database.engine)  # raises when the models and migrations differ


def test_downgrade_then_upgrade_round_trip(database: Database) -> None:
    migrate.downgrade(database.engine, "base")
    assert set(inspect(database.engine).get_table_names()) <= {"alembic_version"}
    migrate.upgrade(database.engine)
    assert set(inspect(database.engine).get_table_names()) >= TABLES
    migrate.check(database.engine)


def test_the_revision_counter_starts_after_the_newest_vm(database: Database) -> None:
    migrate.downgrade(database.engine, "0001")
    with database.engine.begin() as conn:
        for name, revision in (("a", 7), ("b", 41)):
            conn.execute(text(_VM_INSERT), {"n": name, "r": revision})
    migrate.upgrade(database.engine)
    assert database.transaction(repo.current_revision) == 41
    assert database.transaction(repo.allocate_revisions) == 42


def test_existing_vms_and_hosts_join_the_default_cluster(database: Database) -> None:
    migrate.downgrade(database.engine, "0002")
    with database.engine.begin() as conn:
        conn.execute(text(_VM_INSERT), {"n": "old", "r": 9})
        conn.execute(text("UPDATE revision_counter SET value = 9"))
    migrate.upgrade(database.engine)
    with database.engine.connect() as conn:
        assert conn.execute(text("SELECT name FROM clusters")).scalars().all() == ["default"]
        row = conn.execute(text("SELECT cluster_id, spec_version FROM vms")).one()
        floor = conn.execute(text("SELECT resume_floor FROM revision_counter")).scalar_one()
    assert tuple(row) == (DEFAULT_CLUSTER_ID, 1)
    # Deletions before the migration were not recorded: watches resume after it only.
    assert floor == 9


def test_an_empty_database_starts_at_revision_zero(database: Database) -> None:
    assert database.transaction(repo.current_revision) == 0
    assert database.transaction(lambda s: repo.allocate_revisions(s, 3)) == 3


def test_operations_from_before_migration_progress_have_none(database: Database) -> None:
    migrate.downgrade(database.engine, "0007")
    with database.engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO operations (id, kind, state, vm_id, error_code, error_message,"
                " created_at, version_id) VALUES ('op', 'MIGRATE_VM', 'SUCCEEDED', 'vm', '', '',"
                " CURRENT_TIMESTAMP, 1)"
            )
        )
    migrate.upgrade(database.engine)
    with database.engine.connect() as conn:
        row = conn.execute(
            text(
                "SELECT migration_phase, migration_downtime_ms, migration_iterations,"
                " migration_message, transferring_at FROM operations"
            )
        ).one()
    assert tuple(row) == (None, 0, 0, "", None)
