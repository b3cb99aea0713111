"""cycles.paused_by: who holds a paused cycle, the operator or an account problem

The operator can now pause, resume and cancel a cycle (`cancelled` is a new `cycles.state` value and
`cancelled` a cycle item state already; both are plain strings, so neither needs a schema change). Cycles
paused before this revision were paused for an account problem, the only cause there was.

Revision ID: e1c5a9d3b7f4
Revises: b1c7e4a2d9f3
Create Date: 2026-12-02 10:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "e1c5a9d3b7f4"
down_revision: str | None = "b1c7e4a2d9f3"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "cycles",
        sa.Column(
            "paused_by",
            sa.Enum("operator", "account", name="pausedby", native_enum=False, length=20),
            nullable=True,
        ),
    )
    op.execute("UPDATE cycles SET paused_by = 'account' WHERE state = 'paused'")


def downgrade() -> None:
    # Not in batch mode: SQLite drops a column in place (3.35+), and a rebuilt table would lose its trigger.
    op.drop_column("cycles", "paused_by")
