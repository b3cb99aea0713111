"""network_report_delays and ix_messages_final_reports: FALLBACK_AFTER_SECONDS=auto (issue 14)

How long each mobile network's final delivery reports took lately, refreshed by housekeeping from each
network's newest final reports (the partial index, by network and report time, holds only final ones).

Revision ID: b3d9f1a7c5e2
Revises: a6f1d3c8e2b9
Create Date: 2026-12-06 21:10:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "b3d9f1a7c5e2"
down_revision: str | None = "a6f1d3c8e2b9"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

FINAL = "status_rank >= 40"


def upgrade() -> None:
    op.create_table(
        "network_report_delays",
        sa.Column("network_code", sa.String(10), primary_key=True),
        sa.Column("samples", sa.Integer(), nullable=False),
        sa.Column("p50_seconds", sa.Float(), nullable=True),
        sa.Column("p95_seconds", sa.Float(), nullable=True),
        sa.Column("refreshed_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index(
        "ix_messages_final_reports",
        "messages",
        ["network_code", "status_at"],
        postgresql_where=sa.text(FINAL),
        sqlite_where=sa.text(FINAL),
    )


def downgrade() -> None:
    op.drop_index("ix_messages_final_reports", table_name="messages")
    op.drop_table("network_report_delays")
