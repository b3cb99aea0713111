"""cycles.skip_reason: why a schedule period was not run (a cycle row in state `skipped`)

A period that falls due while the schedule's previous cycle has not finished is recorded as a `skipped`
cycle under the period's unique key, with the reason here. The state column is a plain string
(`native_enum=False`), so the new state needs no change of its own.

Revision ID: f3a8c5e1d2b4
Revises: d9e4a7b2c6f1
Create Date: 2026-12-06 12:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "f3a8c5e1d2b4"
down_revision: str | None = "d9e4a7b2c6f1"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("cycles", sa.Column("skip_reason", sa.Text(), nullable=True))


def downgrade() -> None:
    # Not in batch mode: rebuilding `cycles` on SQLite would drop the trigger that deletes a cycle's items.
    op.drop_column("cycles", "skip_reason")
