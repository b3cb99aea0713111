"""cycles.fallback, schedules.fallback, cycle_items.fallback_at: same-cycle voice fallback (design §4.1)

A `same_cycle` cycle calls, in the same cycle, a contact whose SMS got a final failure or no `Success` within
FALLBACK_AFTER_SECONDS. The SMS item keeps its deadline in `fallback_at`; the partial index holds only items
still waiting (a `next_cycle` cycle, the default and every cycle before this revision, writes none).

Revision ID: a6f1d3c8e2b9
Revises: a5c9e1f3b7d4
Create Date: 2026-12-06 20:30:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "a6f1d3c8e2b9"
down_revision: str | None = "a5c9e1f3b7d4"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

WAITING = "fallback_at IS NOT NULL AND channel = 'sms'"


def upgrade() -> None:
    # Not in batch mode: rebuilding `cycles` on SQLite would drop the trigger that deletes a cycle's items.
    for table in ("cycles", "schedules"):
        fallback = sa.Enum("next_cycle", "same_cycle", name="fallback", native_enum=False, length=20)
        op.add_column(table, sa.Column("fallback", fallback, nullable=False, server_default="next_cycle"))
    op.add_column("cycle_items", sa.Column("fallback_at", sa.DateTime(timezone=True), nullable=True))
    op.create_index(
        "ix_cycle_items_fallback_due",
        "cycle_items",
        ["cycle_id", "fallback_at"],
        postgresql_where=sa.text(WAITING),
        sqlite_where=sa.text(WAITING),
    )


def downgrade() -> None:
    op.drop_index("ix_cycle_items_fallback_due", table_name="cycle_items")
    op.drop_column("cycle_items", "fallback_at")
    for table in ("cycles", "schedules"):
        op.drop_column(table, "fallback")
