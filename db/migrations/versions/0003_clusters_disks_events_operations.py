"""clusters, disks, events, operations, api requests

Every host and VM joins the default cluster. A VM gets a spec version (for
UpdateVm's optimistic concurrency) and room for a spec that waits for its
next start. The audit log, operations and the request ids of the API's
mutations get their tables. WatchVms resumes only after the revision this
migration finds: deletions before it were never recorded.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26 07:30:18.130608
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

DEFAULT_CLUSTER_ID = "00000000-0000-0000-0000-000000000001"


def upgrade() -> None:
    op.create_table(
        "api_requests",
        sa.Column("request_id", sa.String(length=128), nullable=False),
        sa.Column("method", sa.String(length=64), nullable=False),
        sa.Column("fingerprint", sa.String(length=64), nullable=False),
        sa.Column("result_id", sa.String(length=36), nullable=False),
        sa.Column("response", sa.LargeBinary(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("request_id", name=op.f("pk_api_requests")),
    )
    with op.batch_alter_table("api_requests", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_api_requests_created_at"), ["created_at"], unique=False
        )

    op.create_table(
        "clusters",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_clusters")),
        sa.UniqueConstraint("name", name=op.f("uq_clusters_name")),
    )
    op.execute(
        "INSERT INTO clusters (id, name, description, created_at) VALUES "
        f"('{DEFAULT_CLUSTER_ID}', 'default', 'the cluster hosts and VMs join unless told',"
        " CURRENT_TIMESTAMP)"
    )
    op.create_table(
        "events",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("vm_id", sa.String(length=36), nullable=True),
        sa.Column("host_id", sa.String(length=36), nullable=True),
        sa.Column("operation_id", sa.String(length=36), nullable=True),
        sa.Column("request_id", sa.String(length=128), nullable=True),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("revision", sa.BigInteger(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_events")),
    )
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_events_host_id"), ["host_id"], unique=False)
        batch_op.create_index("ix_events_kind_revision", ["kind", "revision"], unique=False)
        batch_op.create_index(batch_op.f("ix_events_time"), ["time"], unique=False)
        batch_op.create_index(batch_op.f("ix_events_vm_id"), ["vm_id"], unique=False)

    op.create_table(
        "operations",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column(
            "kind",
            sa.Enum(
                "START_VM",
                "STOP_VM",
                "SHUTDOWN_VM",
                "REBOOT_VM",
                "RESET_VM",
                "PAUSE_VM",
                "RESUME_VM",
                "HIBERNATE_VM",
                name="operationkind",
                native_enum=False,
                length=32,
            ),
            nullable=False,
        ),
        sa.Column(
            "state",
            sa.Enum(
                "RUNNING",
                "SUCCEEDED",
                "FAILED",
                name="operationstate",
                native_enum=False,
                length=32,
            ),
            nullable=False,
        ),
        sa.Column("vm_id", sa.String(length=36), nullable=False),
        sa.Column("host_id", sa.String(length=36), nullable=True),
        sa.Column("request_id", sa.String(length=128), nullable=True),
        sa.Column("error_code", sa.String(length=32), nullable=False),
        sa.Column("error_message", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("scheduled_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("dispatched_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("accepted_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("powering_up_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("up_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("done_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("version_id", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_operations")),
    )
    with op.batch_alter_table("operations", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_operations_created_at"), ["created_at"], unique=False)
        batch_op.create_index(batch_op.f("ix_operations_state"), ["state"], unique=False)
        batch_op.create_index(batch_op.f("ix_operations_vm_id"), ["vm_id"], unique=False)

    op.create_table(
        "vm_disks",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("vm_id", sa.String(length=36), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("path", sa.Text(), nullable=False),
        sa.Column(
            "format",
            sa.Enum("RAW", "QCOW2", name="diskformat", native_enum=False, length=32),
            nullable=False,
        ),
        sa.Column("read_only", sa.Boolean(), nullable=False),
        sa.ForeignKeyConstraint(
            ["vm_id"], ["vms.id"], name=op.f("fk_vm_disks_vm_id_vms"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_vm_disks")),
    )
    with op.batch_alter_table("vm_disks", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_vm_disks_vm_id"), ["vm_id"], unique=False)

    with op.batch_alter_table("hosts", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column(
                "cluster_id",
                sa.String(length=36),
                server_default=DEFAULT_CLUSTER_ID,
                nullable=False,
            )
        )
        batch_op.create_index(batch_op.f("ix_hosts_cluster_id"), ["cluster_id"], unique=False)
        batch_op.create_foreign_key(
            batch_op.f("fk_hosts_cluster_id_clusters"),
            "clusters",
            ["cluster_id"],
            ["id"],
            ondelete="RESTRICT",
        )

    with op.batch_alter_table("revision_counter", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("resume_floor", sa.BigInteger(), server_default="0", nullable=False)
        )
    op.execute("UPDATE revision_counter SET resume_floor = value")

    with op.batch_alter_table("vms", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column(
                "cluster_id",
                sa.String(length=36),
                server_default=DEFAULT_CLUSTER_ID,
                nullable=False,
            )
        )
        batch_op.add_column(
            sa.Column("spec_version", sa.Integer(), server_default="1", nullable=False)
        )
        batch_op.add_column(sa.Column("next_run_spec", sa.JSON(), nullable=True))
        batch_op.create_index(batch_op.f("ix_vms_cluster_id"), ["cluster_id"], unique=False)
        batch_op.create_foreign_key(
            batch_op.f("fk_vms_cluster_id_clusters"),
            "clusters",
            ["cluster_id"],
            ["id"],
            ondelete="RESTRICT",
        )


def downgrade() -> None:
    with op.batch_alter_table("vms", schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f("fk_vms_cluster_id_clusters"), type_="foreignkey")
        batch_op.drop_index(batch_op.f("ix_vms_cluster_id"))
        batch_op.drop_column("next_run_spec")
        batch_op.drop_column("spec_version")
        batch_op.drop_column("cluster_id")

    with op.batch_alter_table("revision_counter", schema=None) as batch_op:
        batch_op.drop_column("resume_floor")

    with op.batch_alter_table("hosts", schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f("fk_hosts_cluster_id_clusters"), type_="foreignkey")
        batch_op.drop_index(batch_op.f("ix_hosts_cluster_id"))
        batch_op.drop_column("cluster_id")

    with op.batch_alter_table("vm_disks", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_vm_disks_vm_id"))

    op.drop_table("vm_disks")
    with op.batch_alter_table("operations", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_operations_vm_id"))
        batch_op.drop_index(batch_op.f("ix_operations_state"))
        batch_op.drop_index(batch_op.f("ix_operations_created_at"))

    op.drop_table("operations")
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_events_vm_id"))
        batch_op.drop_index(batch_op.f("ix_events_time"))
        batch_op.drop_index("ix_events_kind_revision")
        batch_op.drop_index(batch_op.f("ix_events_host_id"))

    op.drop_table("events")
    op.drop_table("clusters")
    with op.batch_alter_table("api_requests", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_api_requests_created_at"))

    op.drop_table("api_requests")
