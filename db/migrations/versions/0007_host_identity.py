"""host identity: each host's certificate (and the one its last renewal
replaced) and key fingerprint, one-time enrollment tokens (hashed), and the
revoked certificates the CRL lists

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-05 06:30:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("hosts") as batch:
        batch.add_column(sa.Column("cert_serial", sa.String(length=64), nullable=True))
        batch.add_column(sa.Column("cert_not_before", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("cert_not_after", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("key_fingerprint", sa.String(length=64), nullable=True))
        batch.add_column(sa.Column("enrolled_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("previous_cert_serial", sa.String(length=64), nullable=True))
        batch.add_column(
            sa.Column("previous_cert_not_after", sa.DateTime(timezone=True), nullable=True)
        )
        batch.create_unique_constraint(batch.f("uq_hosts_key_fingerprint"), ["key_fingerprint"])
    op.create_table(
        "enrollment_tokens",
        sa.Column("digest", sa.String(length=64), nullable=False),
        sa.Column("host_id", sa.String(length=36), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("used_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["host_id"],
            ["hosts.id"],
            name=op.f("fk_enrollment_tokens_host_id_hosts"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("digest", name=op.f("pk_enrollment_tokens")),
    )
    op.create_index(op.f("ix_enrollment_tokens_host_id"), "enrollment_tokens", ["host_id"])
    op.create_table(
        "revoked_certificates",
        sa.Column("serial", sa.String(length=64), nullable=False),
        sa.Column("subject", sa.Text(), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("not_after", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("serial", name=op.f("pk_revoked_certificates")),
    )


def downgrade() -> None:
    op.drop_table("revoked_certificates")
    op.drop_index(op.f("ix_enrollment_tokens_host_id"), table_name="enrollment_tokens")
    op.drop_table("enrollment_tokens")
    with op.batch_alter_table("hosts") as batch:
        batch.drop_constraint(batch.f("uq_hosts_key_fingerprint"), type_="unique")
        batch.drop_column("previous_cert_not_after")
        batch.drop_column("previous_cert_serial")
        batch.drop_column("enrolled_at")
        batch.drop_column("key_fingerprint")
        batch.drop_column("cert_not_after")
        batch.drop_column("cert_not_before")
        batch.drop_column("cert_serial")
