"""one-off sends keep when they were claimed, so an answer AT never gave can be settled later

Revision ID: c4d8e2f1a9b7
Revises: b5d2f0c7e913
Create Date: 2026-11-28 18:50:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "c4d8e2f1a9b7"
down_revision: str | None = "b5d2f0c7e913"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    for table in ("messages", "calls"):
        op.add_column(table, sa.Column("claimed_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    for table in ("messages", "calls"):
        op.drop_column(table, "claimed_at")
