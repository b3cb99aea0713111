"""What reaches Reach from outside, beside the messaging tables of shared/models.py: delivery reports and voice
callbacks as events, incoming SMS, USSD sessions, and every accepted callback verbatim (`raw_callbacks`)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, Index, String, Text, UniqueConstraint
from sqlalchemy import text as sql_text
from sqlalchemy.orm import Mapped, mapped_column

from shared.models import Base, BigId


class IncomingSms(Base):
    __tablename__ = "incoming_sms"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    at_id: Mapped[str] = mapped_column(String(100), unique=True)
    from_phone: Mapped[str] = mapped_column(String(20), index=True)
    to: Mapped[str] = mapped_column(String(20))
    text: Mapped[str] = mapped_column(Text)
    link_id: Mapped[str | None] = mapped_column(String(100))
    network_code: Mapped[str | None] = mapped_column(String(10))
    #: AT's `date` as sent (two formats are seen in the wild).
    sent_date: Mapped[str | None] = mapped_column(String(40))
    #: The keyword Reach acted on (`STOP`, `START`), if any.
    keyword: Mapped[str | None] = mapped_column(String(20))
    contact_id: Mapped[int | None] = mapped_column(ForeignKey("contacts.id", ondelete="SET NULL"))
    received_at: Mapped[datetime]


class UssdSession(Base):
    __tablename__ = "ussd_sessions"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    session_id: Mapped[str] = mapped_column(String(100), unique=True)
    phone: Mapped[str] = mapped_column(String(20), index=True)
    service_code: Mapped[str | None] = mapped_column(String(40))
    network_code: Mapped[str | None] = mapped_column(String(10))
    last_text: Mapped[str] = mapped_column(Text, default="")
    #: What the session did to the contact (`preference:sms`, `opt_out`, ...), if anything.
    outcome: Mapped[str | None] = mapped_column(String(40))
    started_at: Mapped[datetime]
    updated_at: Mapped[datetime]


class RawCallback(Base):
    """Every callback Reach accepted, verbatim, for audit."""

    __tablename__ = "raw_callbacks"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    #: The id the receiver gave the callback when it queued it: a re-drained batch inserts nothing twice.
    inbox_id: Mapped[str] = mapped_column(String(40), unique=True)
    kind: Mapped[str] = mapped_column(String(20))
    received_at: Mapped[datetime] = mapped_column(index=True)
    payload: Mapped[dict[str, Any]]


class DlrEvent(Base):
    """Each distinct delivery report, kept even when its message is not (yet) known."""

    __tablename__ = "dlr_events"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    at_message_id: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(40))
    failure_reason: Mapped[str | None] = mapped_column(String(60))
    phone: Mapped[str | None] = mapped_column(String(20))
    network_code: Mapped[str | None] = mapped_column(String(10))
    retry_count: Mapped[int | None]
    received_at: Mapped[datetime]
    #: NULL while its message row does not exist yet; set once applied.
    applied_at: Mapped[datetime | None]

    __table_args__ = (
        UniqueConstraint("at_message_id", "status"),
        Index("ix_dlr_events_unapplied", "at_message_id", postgresql_where=sql_text("applied_at IS NULL")),
        # A report for this number since a claim (`unmatched_report`), and the rescan of recent unmatched ones.
        Index("ix_dlr_events_phone_received", "phone", "received_at"),
        # The carrier incident guard's look at the last minutes of reports (shared/incidents.py).
        Index("ix_dlr_events_received_at", "received_at"),
        Index(
            "ix_dlr_events_unapplied_received",
            "received_at",
            postgresql_where=sql_text("applied_at IS NULL"),
            sqlite_where=sql_text("applied_at IS NULL"),
        ),
    )


class CallEvent(Base):
    """Each distinct voice callback: stored once per session and state."""

    __tablename__ = "call_events"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    session_id: Mapped[str] = mapped_column(String(64))
    #: `isActive:callSessionState:status:dtmfDigits`, the identity of one step of a call.
    event_key: Mapped[str] = mapped_column(String(200))
    is_active: Mapped[bool]
    call_session_state: Mapped[str | None] = mapped_column(String(40))
    status: Mapped[str | None] = mapped_column(String(40))
    hangup_cause: Mapped[str | None] = mapped_column(String(60))
    dtmf_digits: Mapped[str | None] = mapped_column(String(40))
    received_at: Mapped[datetime]

    __table_args__ = (UniqueConstraint("session_id", "event_key"),)
