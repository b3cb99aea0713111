"""embedded inbox and kv entries: what Redis keeps, in the database when REDIS_URL is not set

Revision ID: e7b3c1d4a5f6
Revises: a3bd32e8b3f2
Create Date: 2026-11-28 13:20:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "e7b3c1d4a5f6"
down_revision: str | None = "a3bd32e8b3f2"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "inbox_entries",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.Column("claim_key", sa.String(length=40), nullable=True),
        sa.Column("claimed_at", sa.Float(), nullable=True),
        sa.Column("dead", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_inbox_entries")),
    )
    op.create_index(op.f("ix_inbox_entries_claim_key"), "inbox_entries", ["claim_key"], unique=False)
    op.create_table(
        "kv_entries",
        sa.Column("key", sa.String(length=200), nullable=False),
        sa.Column("value", sa.Text(), nullable=True),
        sa.Column("counter", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        sa.Column("expires_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_kv_entries")),
    )
    op.create_index(op.f("ix_kv_entries_expires_at"), "kv_entries", ["expires_at"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_kv_entries_expires_at"), table_name="kv_entries")
    op.drop_table("kv_entries")
    op.drop_index(op.f("ix_inbox_entries_claim_key"), table_name="inbox_entries")
    op.drop_table("inbox_entries")
