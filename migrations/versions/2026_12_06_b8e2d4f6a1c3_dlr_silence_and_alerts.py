"""cycles.dlr_checked_at, dlr_silent_at, ignore_dlr_silence; alerts

A cycle whose SMS get no delivery report at all is marked silent (issue 13), so the next cycle does not turn
"no report" into calls; the operator can override it per cycle. Alerts keep what the operator was told.

Revision ID: b8e2d4f6a1c3
Revises: e1c5a9d3b7f4
Create Date: 2026-12-06 18:30:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "b8e2d4f6a1c3"
down_revision: str | None = "e1c5a9d3b7f4"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("cycles", sa.Column("dlr_checked_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column("cycles", sa.Column("dlr_silent_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column("cycles", sa.Column("dlr_event_mark", sa.BigInteger().with_variant(sa.Integer(), "sqlite")))
    op.add_column(
        "cycles", sa.Column("ignore_dlr_silence", sa.Boolean(), server_default=sa.text("false"), nullable=False)
    )
    # Cycles from before the watch are not looked at again: nobody waits on their silence now.
    op.execute("UPDATE cycles SET dlr_checked_at = CURRENT_TIMESTAMP")
    op.create_table(
        "alerts",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("kind", sa.String(length=40), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("details", sa.JSON().with_variant(postgresql.JSONB(), "postgresql"), nullable=True),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.text("CURRENT_TIMESTAMP"), nullable=False
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_alerts")),
    )
    op.create_index(op.f("ix_alerts_created_at"), "alerts", ["created_at"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_alerts_created_at"), table_name="alerts")
    op.drop_table("alerts")
    # Not in batch mode: rebuilding `cycles` on SQLite would drop the trigger that deletes a cycle's items.
    op.drop_column("cycles", "ignore_dlr_silence")
    op.drop_column("cycles", "dlr_event_mark")
    op.drop_column("cycles", "dlr_silent_at")
    op.drop_column("cycles", "dlr_checked_at")
