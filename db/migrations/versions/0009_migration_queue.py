"""migration queue: a migration waits its turn under the per-host and
cluster-wide migration limits, in the operations table (it survives a
controller restart), with what it waits for, the host asked for, and
whether a host's evacuation asked for it

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-05 19:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("operations") as batch:
        batch.add_column(
            sa.Column("waiting", sa.Boolean(), server_default=sa.false(), nullable=False)
        )
        batch.add_column(sa.Column("message", sa.Text(), server_default="", nullable=False))
        batch.add_column(
            sa.Column("destination_ref", sa.String(length=255), server_default="", nullable=False)
        )
        batch.add_column(
            sa.Column("cause", sa.String(length=32), server_default="", nullable=False)
        )


def downgrade() -> None:
    with op.batch_alter_table("operations") as batch:
        batch.drop_column("cause")
        batch.drop_column("destination_ref")
        batch.drop_column("message")
        batch.drop_column("waiting")
