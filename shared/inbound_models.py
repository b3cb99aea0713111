"""What reaches Reach from outside, beside the messaging tables of shared/models.py: incoming SMS, USSD sessions,
and every accepted callback verbatim (`raw_callbacks`)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, String, Text
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
