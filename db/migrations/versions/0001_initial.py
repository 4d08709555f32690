"""initial schema: hosts, vms, nics, guest facts

Revision ID: 0001
Revises:
Create Date: 2026-11-26 04:54:23.131518
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "hosts",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("address", sa.String(length=255), nullable=False),
        sa.Column(
            "state",
            sa.Enum(
                "CONNECTING",
                "UP",
                "MAINTENANCE",
                "PREPARING_FOR_MAINTENANCE",
                "NON_RESPONSIVE",
                "NON_OPERATIONAL",
                "DOWN",
                name="hoststate",
                native_enum=False,
                length=32,
            ),
            nullable=False,
        ),
        sa.Column("state_message", sa.Text(), nullable=False),
        sa.Column("hostname", sa.String(length=255), nullable=False),
        sa.Column("cpus", sa.Integer(), nullable=False),
        sa.Column("memory_total_mib", sa.BigInteger(), nullable=False),
        sa.Column("hypervisor_type", sa.String(length=16), nullable=False),
        sa.Column("last_seen_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("version_id", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_hosts")),
        sa.UniqueConstraint("name", name=op.f("uq_hosts_name")),
    )
    op.create_table(
        "vms",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("vcpus", sa.Integer(), nullable=False),
        sa.Column("memory_mib", sa.BigInteger(), nullable=False),
        sa.Column("kernel_path", sa.Text(), nullable=False),
        sa.Column("initrd_path", sa.Text(), nullable=False),
        sa.Column("cmdline", sa.Text(), nullable=False),
        sa.Column(
            "state",
            sa.Enum(
                "DOWN",
                "WAIT_FOR_LAUNCH",
                "POWERING_UP",
                "UP",
                "PAUSED",
                "POWERING_DOWN",
                "REBOOT_IN_PROGRESS",
                "SAVING_STATE",
                "RESTORING_STATE",
                "SUSPENDED",
                "MIGRATING_FROM",
                "MIGRATING_TO",
                "NOT_RESPONDING",
                "UNKNOWN",
                name="vmstate",
                native_enum=False,
                length=32,
            ),
            nullable=False,
        ),
        sa.Column("host_id", sa.String(length=36), nullable=True),
        sa.Column(
            "exit_reason",
            sa.Enum(
                "NONE",
                "USER_STOP",
                "GUEST_SHUTDOWN",
                "CRASHED",
                "START_FAILED",
                "MIGRATED",
                "SAVED_TO_FILE",
                "LOST",
                name="exitreason",
                native_enum=False,
                length=32,
            ),
            nullable=False,
        ),
        sa.Column("status_message", sa.Text(), nullable=False),
        sa.Column("revision", sa.BigInteger(), nullable=False),
        sa.Column("state_changed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("version_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["host_id"], ["hosts.id"], name=op.f("fk_vms_host_id_hosts"), ondelete="RESTRICT"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_vms")),
        sa.UniqueConstraint("name", name=op.f("uq_vms_name")),
    )
    with op.batch_alter_table("vms", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_vms_revision"), ["revision"], unique=False)

    op.create_table(
        "guest_facts",
        sa.Column("vm_id", sa.String(length=36), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("value", sa.JSON(), nullable=False),
        sa.Column("source", sa.String(length=32), nullable=False),
        sa.Column("observed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["vm_id"], ["vms.id"], name=op.f("fk_guest_facts_vm_id_vms"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("vm_id", "name", name=op.f("pk_guest_facts")),
    )
    op.create_table(
        "vm_nics",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("vm_id", sa.String(length=36), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column(
            "kind",
            sa.Enum("USER", "NETWORK", name="nickind", native_enum=False, length=32),
            nullable=False,
        ),
        sa.Column("network", sa.String(length=255), nullable=False),
        sa.Column("mac_address", sa.String(length=17), nullable=False),
        sa.ForeignKeyConstraint(
            ["vm_id"], ["vms.id"], name=op.f("fk_vm_nics_vm_id_vms"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_vm_nics")),
        sa.UniqueConstraint("mac_address", name=op.f("uq_vm_nics_mac_address")),
    )
    with op.batch_alter_table("vm_nics", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_vm_nics_vm_id"), ["vm_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("vm_nics", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_vm_nics_vm_id"))

    op.drop_table("vm_nics")
    op.drop_table("guest_facts")
    with op.batch_alter_table("vms", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_vms_revision"))

    op.drop_table("vms")
    op.drop_table("hosts")
