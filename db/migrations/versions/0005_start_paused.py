"""start paused, the guest agent version last seen, custom properties: a VM
may be started with its CPUs paused; its host is told which agent to await
and the settings its hook scripts get

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-26 11:15:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("vms") as batch:
        batch.add_column(
            sa.Column("start_paused", sa.Boolean(), server_default=sa.false(), nullable=False)
        )
        batch.add_column(
            sa.Column(
                "guest_agent_version", sa.String(length=256), server_default="", nullable=False
            )
        )
        batch.add_column(sa.Column("custom_properties", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("vms") as batch:
        batch.drop_column("custom_properties")
        batch.drop_column("guest_agent_version")
        batch.drop_column("start_paused")
