"""cycle items and schedules

Revision ID: a3bd32e8b3f2
Revises: 47febed4336c
Create Date: 2026-11-28 04:24:46.335416
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "a3bd32e8b3f2"
down_revision: str | None = "47febed4336c"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "schedules",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("cron", sa.String(length=100), nullable=False),
        sa.Column("timezone", sa.String(length=64), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("voice_message", sa.Text(), nullable=True),
        sa.Column("enabled", sa.Boolean(), server_default=sa.text("true"), nullable=False),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.text("CURRENT_TIMESTAMP"), nullable=False
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_schedules")),
        sa.UniqueConstraint("name", name=op.f("uq_schedules_name")),
    )
    op.create_table(
        "cycle_items",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("cycle_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("contact_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("channel", sa.Enum("sms", "voice", name="channel", native_enum=False, length=20), nullable=False),
        sa.Column(
            "state",
            sa.Enum(
                "pending",
                "claimed",
                "submitting",
                "sent",
                "done",
                "failed",
                "cancelled",
                name="itemstate",
                native_enum=False,
                length=20,
            ),
            nullable=False,
        ),
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column(
            "next_attempt_at", sa.DateTime(timezone=True), server_default=sa.text("CURRENT_TIMESTAMP"), nullable=False
        ),
        sa.Column("lease_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("message_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True),
        sa.Column("call_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column(
            "updated_at", sa.DateTime(timezone=True), server_default=sa.text("CURRENT_TIMESTAMP"), nullable=False
        ),
        sa.ForeignKeyConstraint(
            ["contact_id"], ["contacts.id"], name=op.f("fk_cycle_items_contact_id_contacts"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["cycle_id"], ["cycles.id"], name=op.f("fk_cycle_items_cycle_id_cycles"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_cycle_items")),
        sa.UniqueConstraint("cycle_id", "contact_id", name=op.f("uq_cycle_items_cycle_id_contact_id")),
    )
    op.create_index(op.f("ix_cycle_items_contact_id"), "cycle_items", ["contact_id"], unique=False)
    op.create_index(op.f("ix_cycle_items_cycle_id_state"), "cycle_items", ["cycle_id", "state"], unique=False)
    op.create_index(
        "ix_cycle_items_due",
        "cycle_items",
        ["cycle_id", "channel", "next_attempt_at"],
        unique=False,
        postgresql_where=sa.text("state = 'pending'"),
    )
    op.add_column(
        "calls", sa.Column("cycle_item_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True)
    )
    op.create_index(op.f("ix_calls_cycle_item_id"), "calls", ["cycle_item_id"], unique=False)
    # Batch mode: SQLite (the embedded default) can add a foreign key only by rebuilding the table.
    with op.batch_alter_table("cycles") as batch:
        batch.add_column(sa.Column("schedule_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True))
        batch.add_column(
            sa.Column(
                "plan", sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"), nullable=True
            )
        )
        batch.add_column(sa.Column("planned_at", sa.DateTime(timezone=True), nullable=True))
        batch.create_foreign_key(
            op.f("fk_cycles_schedule_id_schedules"), "schedules", ["schedule_id"], ["id"], ondelete="SET NULL"
        )
    op.add_column(
        "messages", sa.Column("cycle_item_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True)
    )
    op.create_index(op.f("ix_messages_cycle_item_id"), "messages", ["cycle_item_id"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_messages_cycle_item_id"), table_name="messages")
    op.drop_column("messages", "cycle_item_id")
    with op.batch_alter_table("cycles") as batch:
        batch.drop_constraint(op.f("fk_cycles_schedule_id_schedules"), type_="foreignkey")
        batch.drop_column("planned_at")
        batch.drop_column("plan")
        batch.drop_column("schedule_id")
    op.drop_index(op.f("ix_calls_cycle_item_id"), table_name="calls")
    op.drop_column("calls", "cycle_item_id")
    op.drop_index("ix_cycle_items_due", table_name="cycle_items", postgresql_where=sa.text("state = 'pending'"))
    op.drop_index(op.f("ix_cycle_items_cycle_id_state"), table_name="cycle_items")
    op.drop_index(op.f("ix_cycle_items_contact_id"), table_name="cycle_items")
    op.drop_table("cycle_items")
    op.drop_table("schedules")
