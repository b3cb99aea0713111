"""cycles.sms_window, cycles.call_window, cycle_items.waiting_for_window: send windows (design §4.2)

A cycle keeps the windows it was started with (`08:00-20:00`, `always`; NULL, for cycles older than this:
the settings'). An item whose window is closed stays `pending` with `next_attempt_at` at its window's next
opening and `waiting_for_window` true: what a cycle's `waiting` counts.

Revision ID: a5c9e1f3b7d4
Revises: a7d3e9c1f5b8
Create Date: 2026-12-06 20:40:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "a5c9e1f3b7d4"
down_revision: str | None = "a7d3e9c1f5b8"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Not in batch mode: rebuilding `cycles` on SQLite would drop the trigger that deletes a cycle's items.
    op.add_column("cycles", sa.Column("sms_window", sa.String(length=16), nullable=True))
    op.add_column("cycles", sa.Column("call_window", sa.String(length=16), nullable=True))
    # A constant default: no table rewrite on Postgres, however many items there are.
    op.add_column(
        "cycle_items",
        sa.Column("waiting_for_window", sa.Boolean(), server_default=sa.text("false"), nullable=False),
    )


def downgrade() -> None:
    op.drop_column("cycle_items", "waiting_for_window")
    op.drop_column("cycles", "call_window")
    op.drop_column("cycles", "sms_window")
