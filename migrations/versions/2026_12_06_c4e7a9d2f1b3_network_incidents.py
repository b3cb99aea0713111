"""network_incidents, and dlr_events by received_at: the carrier incident guard (shared/incidents.py)

Housekeeping counts each network's final reports of the last minutes (`ix_dlr_events_received_at`, a range);
an incident is one row per network and outage, at most one open per network (a partial unique index).

Revision ID: c4e7a9d2f1b3
Revises: b3e7c9a1d5f2
Create Date: 2026-12-06 21:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "c4e7a9d2f1b3"
down_revision: str | None = "b3e7c9a1d5f2"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_index("ix_dlr_events_received_at", "dlr_events", ["received_at"])
    op.create_table(
        "network_incidents",
        sa.Column("id", BigId, nullable=False),
        sa.Column("network_code", sa.String(length=10), nullable=False),
        sa.Column("opened_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("since", sa.DateTime(timezone=True), nullable=False),
        sa.Column("failures", sa.BigInteger(), nullable=False),
        sa.Column("reports", sa.BigInteger(), nullable=False),
        sa.Column("baseline_rate", sa.Float(), nullable=False),
        sa.Column("recovering_since", sa.DateTime(timezone=True), nullable=True),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("ended_by", sa.String(length=20), nullable=True),
        sa.Column("applied_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_network_incidents")),
    )
    op.create_index(
        "ix_network_incidents_open",
        "network_incidents",
        ["network_code"],
        unique=True,
        postgresql_where=sa.text("ended_at IS NULL"),
        sqlite_where=sa.text("ended_at IS NULL"),
    )
    op.create_index(
        "ix_network_incidents_holding",
        "network_incidents",
        ["id"],
        postgresql_where=sa.text("applied_at IS NULL"),
        sqlite_where=sa.text("applied_at IS NULL"),
    )


def downgrade() -> None:
    op.drop_index("ix_network_incidents_holding", table_name="network_incidents")
    op.drop_index("ix_network_incidents_open", table_name="network_incidents")
    op.drop_table("network_incidents")
    op.drop_index("ix_dlr_events_received_at", table_name="dlr_events")
