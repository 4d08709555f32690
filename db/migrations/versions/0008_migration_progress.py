"""migration progress: a migration's operation records its transfer as the
source host reports it (phase, bytes, iterations, downtime) and when it began
transferring and switched over

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-05 19:10:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

_COUNTERS = (
    "migration_total_bytes",
    "migration_processed_bytes",
    "migration_remaining_bytes",
    "migration_bytes_per_second",
    "migration_elapsed_ms",
    "migration_downtime_ms",
)


def upgrade() -> None:
    phase = sa.Enum(
        "TRANSFERRING",
        "SWITCHED_OVER",
        "FAILED",
        "CANCELLED",
        name="migrationphase",
        native_enum=False,
        length=32,
    )
    with op.batch_alter_table("operations") as batch:
        batch.add_column(sa.Column("transferring_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("switched_over_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("migration_phase", phase, nullable=True))
        for name in _COUNTERS:
            batch.add_column(sa.Column(name, sa.BigInteger(), server_default="0", nullable=False))
        batch.add_column(
            sa.Column("migration_iterations", sa.Integer(), server_default="0", nullable=False)
        )
        batch.add_column(
            sa.Column("migration_message", sa.Text(), server_default="", nullable=False)
        )
        batch.add_column(
            sa.Column("migration_updated_at", sa.DateTime(timezone=True), nullable=True)
        )


def downgrade() -> None:
    with op.batch_alter_table("operations") as batch:
        batch.drop_column("migration_updated_at")
        batch.drop_column("migration_message")
        batch.drop_column("migration_iterations")
        for name in reversed(_COUNTERS):
            batch.drop_column(name)
        batch.drop_column("migration_phase")
        batch.drop_column("switched_over_at")
        batch.drop_column("transferring_at")
