"""cycles.tags, schedules.tags: the audience of a cycle (design §4.1)

A cycle with tags reaches only the contacts carrying at least one of them; a schedule's tags are copied onto
every cycle it starts. NULL is "every contact". `text[]` on Postgres (as `contacts.tags`), JSON on SQLite.

Revision ID: c4f7a2e9d1b5
Revises: b8e2d4f6a1c3
Create Date: 2026-12-06 19:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "c4f7a2e9d1b5"
down_revision: str | None = "b8e2d4f6a1c3"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLES = ("cycles", "schedules")


def upgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    # Not in batch mode: rebuilding `cycles` on SQLite would drop the trigger that deletes a cycle's items.
    for table in TABLES:
        tags = postgresql.ARRAY(sa.Text()) if postgres else sa.JSON()
        op.add_column(table, sa.Column("tags", tags, nullable=True))


def downgrade() -> None:
    for table in TABLES:
        op.drop_column(table, "tags")
