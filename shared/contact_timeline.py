"""One contact's timeline, newest first: the dashboard's contact page (`GET /dashboard/contacts/<phone>`).

What happened to and from the contact, from the tables that record it: SMS sent (`messages`), their delivery
reports (`dlr_events`), calls (`calls`), USSD sessions, incoming SMS (a STOP or START among them), and the
consent change last applied (only the latest is kept: `contacts.consent_at`, `consent_by`).

A page is PAGE_SIZE events. Its cursor is the last event's (time, kind, id): every source reads, through its
own index (a contact's messages and calls, the number's USSD sessions and incoming SMS), only events before
the cursor, so events at the same instant are neither repeated nor skipped from one page to the next.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import and_, or_, select, true
from sqlalchemy.orm import InstrumentedAttribute, Session
from sqlalchemy.sql.elements import ColumnElement

from shared.db import MAX_BIGINT
from shared.models import Call, Contact, ContactStatus, DlrEvent, IncomingSms, Message, UssdSession

PAGE_SIZE = 50
#: The kinds of event, in the order they sort at the same instant (a later one is shown above): a report
#: follows its SMS, a consent change follows the STOP that made it.
KINDS = ("sms", "dlr", "call", "ussd", "incoming", "consent")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


class BadCursor(ValueError):
    """A `before` cursor that is not one this module made."""


@dataclass(frozen=True)
class Cursor:
    """Where a page ends: its last event's time, kind (as its rank in KINDS) and row id."""

    at: datetime
    rank: int
    id: int

    def encode(self) -> str:
        return f"{(self.at - _EPOCH) // _MICROSECOND}.{self.rank}.{self.id}"

    @classmethod
    def decode(cls, raw: str) -> Cursor:
        parts = raw.split(".")
        if len(parts) != 3 or not all(part.isdigit() and len(part) < 20 for part in parts):
            raise BadCursor(f"not a timeline cursor: {raw[:40]!r}")
        micros, rank, row_id = (int(part) for part in parts)
        if rank >= len(KINDS) or row_id > MAX_BIGINT:
            raise BadCursor(f"not a timeline cursor: {raw[:40]!r}")
        try:
            return cls(_EPOCH + micros * _MICROSECOND, rank, row_id)
        except OverflowError:
            raise BadCursor(f"not a timeline cursor: {raw[:40]!r}") from None


@dataclass(frozen=True)
class Event:
    at: datetime
    kind: str
    id: int
    details: dict[str, Any]

    @property
    def cursor(self) -> Cursor:
        return Cursor(self.at, KINDS.index(self.kind), self.id)

    def sort_key(self) -> tuple[datetime, int, int]:
        return (self.at, KINDS.index(self.kind), self.id)


@dataclass(frozen=True)
class TimelinePage:
    events: list[Event]
    #: Where the next (older) page starts; None when this one reaches the oldest event.
    next: Cursor | None


def timeline(session: Session, contact: Contact, before: Cursor | None = None) -> TimelinePage:
    """The contact's PAGE_SIZE newest events older than `before` (all sources merged), newest first."""
    found = [event for source in SOURCES for event in source(session, contact, before, PAGE_SIZE + 1)]
    found.sort(key=Event.sort_key, reverse=True)
    shown = found[:PAGE_SIZE]
    return TimelinePage(shown, shown[-1].cursor if len(found) > PAGE_SIZE else None)


def _before(at: Any, row_id: InstrumentedAttribute[int], kind: str, cursor: Cursor | None) -> ColumnElement[bool]:
    """SQL: the row sorts before the cursor by (time, kind, id); the kind's rank is a constant per source."""
    if cursor is None:
        return true()
    rank = KINDS.index(kind)
    if rank < cursor.rank:
        return at <= cursor.at
    if rank > cursor.rank:
        return at < cursor.at
    return or_(at < cursor.at, and_(at == cursor.at, row_id < cursor.id))


#: What the page shows of each kind of row (the template names them).
MESSAGE_FIELDS = ("text", "cycle_id", "send_state", "send_status", "send_error", "status", "cost", "currency")
REPORT_FIELDS = ("status", "failure_reason", "network_code", "retry_count")
CALL_FIELDS = (
    "cycle_id", "direction", "send_state", "send_error", "status", "outcome", "hangup_cause", "duration_seconds",
    "dtmf_digits", "acknowledged", "ended_at",
)  # fmt: skip


def _fields(row: object, *names: str) -> dict[str, Any]:
    return {name: getattr(row, name) for name in names}


Source = Callable[[Session, Contact, Cursor | None, int], list[Event]]


def _messages(session: Session, contact: Contact, cursor: Cursor | None, limit: int) -> list[Event]:
    rows = session.scalars(
        select(Message)
        .where(Message.contact_id == contact.id, _before(Message.created_at, Message.id, "sms", cursor))
        .order_by(Message.created_at.desc(), Message.id.desc())
        .limit(limit)
    )
    return [Event(m.created_at, "sms", m.id, _fields(m, *MESSAGE_FIELDS)) for m in rows]


def _reports(session: Session, contact: Contact, cursor: Cursor | None, limit: int) -> list[Event]:
    rows = session.execute(
        select(DlrEvent, Message.id, Message.cycle_id)
        .join(Message, Message.at_message_id == DlrEvent.at_message_id)
        .where(Message.contact_id == contact.id, _before(DlrEvent.received_at, DlrEvent.id, "dlr", cursor))
        .order_by(DlrEvent.received_at.desc(), DlrEvent.id.desc())
        .limit(limit)
    )
    return [
        Event(
            r.received_at, "dlr", r.id, {**_fields(r, *REPORT_FIELDS), "message_id": message_id, "cycle_id": cycle_id}
        )
        for r, message_id, cycle_id in rows
    ]


def _calls(session: Session, contact: Contact, cursor: Cursor | None, limit: int) -> list[Event]:
    rows = session.scalars(
        select(Call)
        .where(Call.contact_id == contact.id, _before(Call.created_at, Call.id, "call", cursor))
        .order_by(Call.created_at.desc(), Call.id.desc())
        .limit(limit)
    )
    return [Event(c.created_at, "call", c.id, _fields(c, *CALL_FIELDS)) for c in rows]


def _ussd(session: Session, contact: Contact, cursor: Cursor | None, limit: int) -> list[Event]:
    rows = session.scalars(
        select(UssdSession)
        .where(UssdSession.phone == contact.phone, _before(UssdSession.started_at, UssdSession.id, "ussd", cursor))
        .order_by(UssdSession.started_at.desc(), UssdSession.id.desc())
        .limit(limit)
    )
    return [
        Event(u.started_at, "ussd", u.id, _fields(u, "service_code", "last_text", "outcome", "network_code"))
        for u in rows
    ]


def _incoming(session: Session, contact: Contact, cursor: Cursor | None, limit: int) -> list[Event]:
    rows = session.scalars(
        select(IncomingSms)
        .where(
            IncomingSms.from_phone == contact.phone,
            _before(IncomingSms.received_at, IncomingSms.id, "incoming", cursor),
        )
        .order_by(IncomingSms.received_at.desc(), IncomingSms.id.desc())
        .limit(limit)
    )
    return [Event(s.received_at, "incoming", s.id, _fields(s, "text", "keyword", "to", "network_code")) for s in rows]


def _consent(session: Session, contact: Contact, cursor: Cursor | None, limit: int) -> list[Event]:
    """The consent change last applied: an opt-out while the contact is opted out, else an opt-in."""
    if contact.consent_at is None:
        return []
    change = "opt-out" if contact.status is ContactStatus.OPTED_OUT else "opt-in"
    event = Event(contact.consent_at, "consent", contact.id, {"change": change, "by": contact.consent_by})
    return [event] if cursor is None or event.sort_key() < (cursor.at, cursor.rank, cursor.id) else []


SOURCES: tuple[Source, ...] = (_messages, _reports, _calls, _ussd, _incoming, _consent)
