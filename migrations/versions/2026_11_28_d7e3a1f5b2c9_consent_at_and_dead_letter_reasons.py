"""contacts keep when their consent last changed; parked embedded-inbox entries keep why and when

`consent_at` is the customer's time of the STOP, START or USSD choice last applied: an older one that
arrives later (a recovered batch, a late retry) is ignored. Opted-out contacts start from their opt-out.

Revision ID: d7e3a1f5b2c9
Revises: c4d8e2f1a9b7
Create Date: 2026-11-28 20:10:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "d7e3a1f5b2c9"
down_revision: str | None = "c4d8e2f1a9b7"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("contacts", sa.Column("consent_at", sa.DateTime(timezone=True), nullable=True))
    op.execute("UPDATE contacts SET consent_at = opted_out_at WHERE opted_out_at IS NOT NULL")
    op.add_column("inbox_entries", sa.Column("dead_reason", sa.Text(), nullable=True))
    op.add_column("inbox_entries", sa.Column("dead_at", sa.Float(), nullable=True))


def downgrade() -> None:
    op.drop_column("inbox_entries", "dead_at")
    op.drop_column("inbox_entries", "dead_reason")
    op.drop_column("contacts", "consent_at")
