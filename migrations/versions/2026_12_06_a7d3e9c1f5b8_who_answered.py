"""Who answered (issue 14): calls.grade, contacts.reached_at/reached_by, cycle_items.confirmed_at

- `calls.grade`: an ended call's grade (acknowledged, answered, voicemail, not_answered; shared/call_grades.py);
- `contacts.reached_at`, `contacts.reached_by`: the latest proof the customer is reachable (their SMS, a USSD
  session, an acknowledged call) and which; a transient SMS failure older than it no longer routes them to a
  call (shared/reachability.py);
- `cycle_items.confirmed_at`: when the customer confirmed on USSD that they read the cycle's message.

All nullable, no default: adding them rewrites no table.

Revision ID: a7d3e9c1f5b8
Revises: d7b3e9a1c5f2
Create Date: 2026-12-06 20:30:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "a7d3e9c1f5b8"
down_revision: str | None = "d7b3e9a1c5f2"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

COLUMNS = (
    ("calls", sa.Column("grade", sa.String(length=20), nullable=True)),
    ("contacts", sa.Column("reached_at", sa.DateTime(timezone=True), nullable=True)),
    ("contacts", sa.Column("reached_by", sa.String(length=10), nullable=True)),
    ("cycle_items", sa.Column("confirmed_at", sa.DateTime(timezone=True), nullable=True)),
)


def upgrade() -> None:
    # Not in batch mode: rebuilding a table on SQLite would drop its triggers (cycles, cycle_items).
    for table, column in COLUMNS:
        op.add_column(table, column)


def downgrade() -> None:
    for table, column in reversed(COLUMNS):
        op.drop_column(table, column.name)
