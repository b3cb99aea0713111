"""initial schema

Revision ID: 47febed4336c
Revises:
Create Date: 2026-11-28 04:16:49.487420
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "47febed4336c"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "call_events",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("session_id", sa.String(length=64), nullable=False),
        sa.Column("event_key", sa.String(length=200), nullable=False),
        sa.Column("is_active", sa.Boolean(), nullable=False),
        sa.Column("call_session_state", sa.String(length=40), nullable=True),
        sa.Column("status", sa.String(length=40), nullable=True),
        sa.Column("hangup_cause", sa.String(length=60), nullable=True),
        sa.Column("dtmf_digits", sa.String(length=40), nullable=True),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_call_events")),
        sa.UniqueConstraint("session_id", "event_key", name=op.f("uq_call_events_session_id_event_key")),
    )
    op.create_table(
        "contacts",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("phone", sa.String(length=20), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=True),
        sa.Column(
            "status",
            sa.Enum(
                "new",
                "pending",
                "active",
                "inactive",
                "opted_out",
                "invalid",
                name="contactstatus",
                native_enum=False,
                length=20,
            ),
            nullable=False,
        ),
        sa.Column(
            "channel_preference",
            sa.Enum("sms", "voice", name="channel", native_enum=False, length=20),
            nullable=True,
        ),
        sa.Column("last_message_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True),
        sa.Column("last_sms_status", sa.String(length=40), nullable=True),
        sa.Column("last_failure_reason", sa.String(length=60), nullable=True),
        sa.Column("last_network_code", sa.String(length=10), nullable=True),
        sa.Column("last_sms_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_call_status", sa.String(length=40), nullable=True),
        sa.Column("last_hangup_cause", sa.String(length=60), nullable=True),
        sa.Column("last_call_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("opted_out_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("CURRENT_TIMESTAMP"),
            nullable=False,
        ),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("CURRENT_TIMESTAMP"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_contacts")),
        sa.UniqueConstraint("phone", name=op.f("uq_contacts_phone")),
    )
    op.create_index(op.f("ix_contacts_last_message_id"), "contacts", ["last_message_id"], unique=False)
    op.create_index(op.f("ix_contacts_status_id"), "contacts", ["status", "id"], unique=False)
    op.create_table(
        "cycles",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column(
            "state",
            sa.Enum(
                "planning",
                "dispatching",
                "paused",
                "done",
                "failed",
                name="cyclestate",
                native_enum=False,
                length=20,
            ),
            nullable=False,
        ),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("voice_message", sa.Text(), nullable=True),
        sa.Column("period_key", sa.String(length=120), nullable=True),
        sa.Column("paused_reason", sa.Text(), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("CURRENT_TIMESTAMP"),
            nullable=False,
        ),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_cycles")),
        sa.UniqueConstraint("period_key", name=op.f("uq_cycles_period_key")),
    )
    op.create_table(
        "dlr_events",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("at_message_id", sa.String(length=64), nullable=False),
        sa.Column("status", sa.String(length=40), nullable=False),
        sa.Column("failure_reason", sa.String(length=60), nullable=True),
        sa.Column("phone", sa.String(length=20), nullable=True),
        sa.Column("network_code", sa.String(length=10), nullable=True),
        sa.Column("retry_count", sa.Integer(), nullable=True),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("applied_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_dlr_events")),
        sa.UniqueConstraint("at_message_id", "status", name=op.f("uq_dlr_events_at_message_id_status")),
    )
    op.create_index(
        "ix_dlr_events_unapplied",
        "dlr_events",
        ["at_message_id"],
        unique=False,
        postgresql_where=sa.text("applied_at IS NULL"),
    )
    op.create_table(
        "raw_callbacks",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("inbox_id", sa.String(length=40), nullable=False),
        sa.Column("kind", sa.String(length=20), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column(
            "payload",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_raw_callbacks")),
        sa.UniqueConstraint("inbox_id", name=op.f("uq_raw_callbacks_inbox_id")),
    )
    op.create_index(op.f("ix_raw_callbacks_received_at"), "raw_callbacks", ["received_at"], unique=False)
    op.create_table(
        "ussd_sessions",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("session_id", sa.String(length=100), nullable=False),
        sa.Column("phone", sa.String(length=20), nullable=False),
        sa.Column("service_code", sa.String(length=40), nullable=True),
        sa.Column("network_code", sa.String(length=10), nullable=True),
        sa.Column("last_text", sa.Text(), nullable=False),
        sa.Column("outcome", sa.String(length=40), nullable=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ussd_sessions")),
        sa.UniqueConstraint("session_id", name=op.f("uq_ussd_sessions_session_id")),
    )
    op.create_index(op.f("ix_ussd_sessions_phone"), "ussd_sessions", ["phone"], unique=False)
    op.create_table(
        "calls",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("session_id", sa.String(length=64), nullable=True),
        sa.Column("contact_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True),
        sa.Column("cycle_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True),
        sa.Column("phone", sa.String(length=20), nullable=False),
        sa.Column("direction", sa.String(length=10), nullable=False),
        sa.Column("message", sa.Text(), nullable=True),
        sa.Column("send_state", sa.String(length=20), nullable=True),
        sa.Column("send_error", sa.Text(), nullable=True),
        sa.Column("status", sa.String(length=40), nullable=True),
        sa.Column("call_session_state", sa.String(length=40), nullable=True),
        sa.Column("hangup_cause", sa.String(length=60), nullable=True),
        sa.Column("outcome", sa.String(length=20), nullable=True),
        sa.Column("duration_seconds", sa.Integer(), nullable=True),
        sa.Column("amount", sa.Numeric(precision=14, scale=4), nullable=True),
        sa.Column("currency", sa.String(length=3), nullable=True),
        sa.Column("dtmf_digits", sa.String(length=40), nullable=True),
        sa.Column("acknowledged", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column("recording_url", sa.Text(), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("CURRENT_TIMESTAMP"),
            nullable=False,
        ),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["contact_id"], ["contacts.id"], name=op.f("fk_calls_contact_id_contacts"), ondelete="SET NULL"
        ),
        sa.ForeignKeyConstraint(
            ["cycle_id"], ["cycles.id"], name=op.f("fk_calls_cycle_id_cycles"), ondelete="SET NULL"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_calls")),
        sa.UniqueConstraint("session_id", name=op.f("uq_calls_session_id")),
    )
    op.create_index(op.f("ix_calls_contact_id"), "calls", ["contact_id"], unique=False)
    op.create_index(op.f("ix_calls_cycle_id"), "calls", ["cycle_id"], unique=False)
    op.create_index(op.f("ix_calls_phone"), "calls", ["phone"], unique=False)
    op.create_table(
        "incoming_sms",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("at_id", sa.String(length=100), nullable=False),
        sa.Column("from_phone", sa.String(length=20), nullable=False),
        sa.Column("to", sa.String(length=20), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("link_id", sa.String(length=100), nullable=True),
        sa.Column("network_code", sa.String(length=10), nullable=True),
        sa.Column("sent_date", sa.String(length=40), nullable=True),
        sa.Column("keyword", sa.String(length=20), nullable=True),
        sa.Column("contact_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["contact_id"],
            ["contacts.id"],
            name=op.f("fk_incoming_sms_contact_id_contacts"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_incoming_sms")),
        sa.UniqueConstraint("at_id", name=op.f("uq_incoming_sms_at_id")),
    )
    op.create_index(op.f("ix_incoming_sms_from_phone"), "incoming_sms", ["from_phone"], unique=False)
    op.create_table(
        "messages",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("at_message_id", sa.String(length=64), nullable=True),
        sa.Column("contact_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("cycle_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True),
        sa.Column("phone", sa.String(length=20), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("send_state", sa.String(length=20), server_default="queued", nullable=False),
        sa.Column("send_error", sa.Text(), nullable=True),
        sa.Column("send_status_code", sa.Integer(), nullable=True),
        sa.Column("send_status", sa.String(length=40), nullable=True),
        sa.Column("status", sa.String(length=40), nullable=True),
        sa.Column("status_rank", sa.Integer(), server_default="0", nullable=False),
        sa.Column("failure_reason", sa.String(length=60), nullable=True),
        sa.Column("network_code", sa.String(length=10), nullable=True),
        sa.Column("cost", sa.Numeric(precision=14, scale=4), nullable=True),
        sa.Column("currency", sa.String(length=3), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("CURRENT_TIMESTAMP"),
            nullable=False,
        ),
        sa.Column("status_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["contact_id"], ["contacts.id"], name=op.f("fk_messages_contact_id_contacts"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["cycle_id"], ["cycles.id"], name=op.f("fk_messages_cycle_id_cycles"), ondelete="SET NULL"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_messages")),
        sa.UniqueConstraint("at_message_id", name=op.f("uq_messages_at_message_id")),
    )
    op.create_index(op.f("ix_messages_contact_id"), "messages", ["contact_id"], unique=False)
    op.create_index(op.f("ix_messages_cycle_id"), "messages", ["cycle_id"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_messages_cycle_id"), table_name="messages")
    op.drop_index(op.f("ix_messages_contact_id"), table_name="messages")
    op.drop_table("messages")
    op.drop_index(op.f("ix_incoming_sms_from_phone"), table_name="incoming_sms")
    op.drop_table("incoming_sms")
    op.drop_index(op.f("ix_calls_phone"), table_name="calls")
    op.drop_index(op.f("ix_calls_cycle_id"), table_name="calls")
    op.drop_index(op.f("ix_calls_contact_id"), table_name="calls")
    op.drop_table("calls")
    op.drop_index(op.f("ix_ussd_sessions_phone"), table_name="ussd_sessions")
    op.drop_table("ussd_sessions")
    op.drop_index(op.f("ix_raw_callbacks_received_at"), table_name="raw_callbacks")
    op.drop_table("raw_callbacks")
    op.drop_index("ix_dlr_events_unapplied", table_name="dlr_events", postgresql_where=sa.text("applied_at IS NULL"))
    op.drop_table("dlr_events")
    op.drop_table("cycles")
    op.drop_index(op.f("ix_contacts_status_id"), table_name="contacts")
    op.drop_index(op.f("ix_contacts_last_message_id"), table_name="contacts")
    op.drop_table("contacts")
    op.drop_table("call_events")
