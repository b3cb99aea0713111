"""one-off sends keep when they were claimed, so an answer AT never gave can be settled later

Also an index for housekeeping's search for cycle items whose send lease ran out (it scanned the table).

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


SUBMITTING = "state = 'submitting'"


def upgrade() -> None:
    for table in ("messages", "calls"):
        op.add_column(table, sa.Column("claimed_at", sa.DateTime(timezone=True), nullable=True))
    op.create_index(
        "ix_cycle_items_submitting_lease",
        "cycle_items",
        ["lease_until"],
        postgresql_where=sa.text(SUBMITTING),
        sqlite_where=sa.text(SUBMITTING),
    )


def downgrade() -> None:
    op.drop_index("ix_cycle_items_submitting_lease", table_name="cycle_items")
    for table in ("messages", "calls"):
        op.drop_column(table, "claimed_at")
