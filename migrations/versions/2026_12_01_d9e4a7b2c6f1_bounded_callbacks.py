"""bounded callback tables: indexes for matching reports by number, the bounded rescan and late adoption

- `ix_dlr_events_phone_received`: `unmatched_report` (a report for this number since the claim) was a
  sequential scan of every report ever stored.
- `ix_dlr_events_unapplied_received`: housekeeping's rescan of reports with no message now reads only those
  within UNMATCHED_DLR_HOURS, not every unmatched report forever.
- `ix_messages_unanswered`: the few first attempts that were sent again, looked at for a late report.

Revision ID: d9e4a7b2c6f1
Revises: d7e3a1f5b2c9
Create Date: 2026-12-01 22:40:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "d9e4a7b2c6f1"
down_revision: str | None = "d7e3a1f5b2c9"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

UNAPPLIED = "applied_at IS NULL"
UNANSWERED = "send_state = 'unanswered'"


def upgrade() -> None:
    op.create_index("ix_dlr_events_phone_received", "dlr_events", ["phone", "received_at"])
    op.create_index(
        "ix_dlr_events_unapplied_received",
        "dlr_events",
        ["received_at"],
        postgresql_where=sa.text(UNAPPLIED),
        sqlite_where=sa.text(UNAPPLIED),
    )
    op.create_index(
        "ix_messages_unanswered",
        "messages",
        ["created_at"],
        postgresql_where=sa.text(UNANSWERED),
        sqlite_where=sa.text(UNANSWERED),
    )


def downgrade() -> None:
    op.drop_index("ix_messages_unanswered", table_name="messages")
    op.drop_index("ix_dlr_events_unapplied_received", table_name="dlr_events")
    op.drop_index("ix_dlr_events_phone_received", table_name="dlr_events")
