"""revision counter: the one row that gives out VM revisions

Revisions were counted in the controller's memory, from the highest one in
vms at start; with several database workers (PostgreSQL) or several
controllers that is not safe. The counter starts where the VMs are.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26 05:31:24.613459
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "revision_counter",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("value", sa.BigInteger(), nullable=False),
        sa.CheckConstraint("id = 1", name=op.f("ck_revision_counter_single_row")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_revision_counter")),
    )
    op.execute(
        "INSERT INTO revision_counter (id, value) SELECT 1, COALESCE(MAX(revision), 0) FROM vms"
    )


def downgrade() -> None:
    op.drop_table("revision_counter")
