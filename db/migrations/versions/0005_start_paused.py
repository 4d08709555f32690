"""start paused: a VM may be started with its CPUs paused

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


def downgrade() -> None:
    with op.batch_alter_table("vms") as batch:
        batch.drop_column("start_paused")
