"""queued migration policy: a migration that waits its turn keeps the
convergence policy it was asked with (a call's MigrateVmRequest.policy over
the cluster's), and starts with it when its turn comes

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-06 03:40:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("operations") as batch:
        batch.add_column(
            sa.Column("migration_policy", sa.Text(), server_default="", nullable=False)
        )


def downgrade() -> None:
    with op.batch_alter_table("operations") as batch:
        batch.drop_column("migration_policy")
