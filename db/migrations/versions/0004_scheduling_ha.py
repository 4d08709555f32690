"""scheduling and high availability: affinity groups, pinned host, HA
restarts, start retries and external VMs

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-26 07:50:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

_ORIGIN = sa.Enum("MANAGED", "EXTERNAL", name="vmorigin", native_enum=False, length=32)


def upgrade() -> None:
    with op.batch_alter_table("vms") as batch:
        batch.add_column(
            sa.Column("highly_available", sa.Boolean(), server_default=sa.false(), nullable=False)
        )
        batch.add_column(sa.Column("pinned_host_id", sa.String(length=36), nullable=True))
        batch.add_column(sa.Column("origin", _ORIGIN, server_default="MANAGED", nullable=False))
        batch.add_column(
            sa.Column("start_request_id", sa.String(length=64), server_default="", nullable=False)
        )
        batch.add_column(sa.Column("start_tries", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("ha_restart_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(
            sa.Column("ha_restart_count", sa.Integer(), server_default="0", nullable=False)
        )
        batch.create_index(batch.f("ix_vms_ha_restart_at"), ["ha_restart_at"], unique=False)
    op.create_table(
        "affinity_groups",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("positive", sa.Boolean(), nullable=False),
        sa.Column("enforcing", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_affinity_groups")),
        sa.UniqueConstraint("name", name=op.f("uq_affinity_groups_name")),
    )
    op.create_table(
        "affinity_group_vms",
        sa.Column("group_id", sa.String(length=36), nullable=False),
        sa.Column("vm_id", sa.String(length=36), nullable=False),
        sa.ForeignKeyConstraint(
            ["group_id"],
            ["affinity_groups.id"],
            name=op.f("fk_affinity_group_vms_group_id_affinity_groups"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["vm_id"], ["vms.id"], name=op.f("fk_affinity_group_vms_vm_id_vms"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("group_id", "vm_id", name=op.f("pk_affinity_group_vms")),
    )
    op.create_index(
        op.f("ix_affinity_group_vms_vm_id"), "affinity_group_vms", ["vm_id"], unique=False
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_affinity_group_vms_vm_id"), table_name="affinity_group_vms")
    op.drop_table("affinity_group_vms")
    op.drop_table("affinity_groups")
    with op.batch_alter_table("vms") as batch:
        batch.drop_index(batch.f("ix_vms_ha_restart_at"))
        batch.drop_column("ha_restart_count")
        batch.drop_column("ha_restart_at")
        batch.drop_column("start_tries")
        batch.drop_column("start_request_id")
        batch.drop_column("origin")
        batch.drop_column("pinned_host_id")
        batch.drop_column("highly_available")
