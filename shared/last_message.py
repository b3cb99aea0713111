"""USSD "My last message" (issue 14): the last message Reach sent a number (an SMS AT took, or the text of a
call AT placed, whichever is newer), as the receiver shows it and as the worker records its confirmation.

The receiver reads it while the customer waits (one indexed lookup on `contact_id`, as the status screen
does); the worker finds the same message again, as of the confirmation's receipt time, and marks its cycle
item `confirmed_at`: the customer read it, so the cycle reached them (`reached` in the cycle's answer).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, func, or_, select, union, union_all, update
from sqlalchemy.orm import Session

from shared.models import Call, Contact, CycleItem, Message
from shared.status_policy import Action, Kind, rules_of


@dataclass(frozen=True)
class LastMessage:
    text: str
    cycle_item_id: int | None  # None for a one-off send (`POST /communicate`)


def latest(db: Connection | Session, phone: str, before: datetime | None = None) -> LastMessage | None:
    """The newest message Reach sent `phone` (created no later than `before`, when given), or None."""
    contact_id = select(Contact.id).where(Contact.phone == phone).scalar_subquery()
    sms = select(Message.text.label("text"), Message.cycle_item_id.label("item"), Message.created_at.label("at")).where(
        Message.contact_id == contact_id, Message.send_state == "sent"
    )
    calls = select(Call.message, Call.cycle_item_id, Call.created_at).where(
        Call.contact_id == contact_id, Call.send_state == "sent", Call.message.is_not(None)
    )
    if before is not None:
        sms, calls = sms.where(Message.created_at <= before), calls.where(Call.created_at <= before)
    both = union_all(sms, calls).subquery()
    row = db.execute(select(both.c.text, both.c.item).order_by(both.c.at.desc()).limit(1)).first()
    return LastMessage(row[0], row[1]) if row else None


def confirm_read(session: Session, phone: str, at: datetime) -> int | None:
    """The customer confirmed at `at` that they read their last message: its cycle item is `confirmed_at` (the
    earliest confirmation is kept). Returns the item's id, or None (nothing sent, or a one-off send)."""
    shown = latest(session, phone, before=at)
    if shown is None or shown.cycle_item_id is None:
        return None
    confirmed = CycleItem.confirmed_at
    session.execute(
        update(CycleItem)
        .where(CycleItem.id == shown.cycle_item_id, or_(confirmed.is_(None), confirmed > at))
        .values(confirmed_at=at)
    )
    return shown.cycle_item_id


def reached_counts(session: Session, cycle_id: int) -> dict[str, Any]:
    """The cycle's `reached`: contacts it reached (a delivered SMS, an acknowledged call or a USSD confirmation),
    and how many confirmed on USSD. Counted by cycle item (one per contact, kept when a contact is erased), as a
    union of three range reads on the cycle's rows rather than a probe per item."""
    handset_receipts = [status for status, rule in rules_of(Kind.DLR).items() if rule.action is Action.DELIVERED]
    confirmed = select(CycleItem.id.label("item")).where(
        CycleItem.cycle_id == cycle_id, CycleItem.confirmed_at.is_not(None)
    )
    delivered = select(Message.cycle_item_id).where(
        Message.cycle_id == cycle_id, Message.status.in_(handset_receipts), Message.cycle_item_id.is_not(None)
    )
    acknowledged = select(Call.cycle_item_id).where(
        Call.cycle_id == cycle_id, Call.acknowledged.is_(True), Call.cycle_item_id.is_not(None)
    )
    reached = union(confirmed, delivered, acknowledged).subquery()
    contacts = session.scalar(select(func.count()).select_from(reached))
    ussd = session.scalar(select(func.count()).select_from(confirmed.subquery()))
    return {"contacts": int(contacts or 0), "ussd_confirmed": int(ussd or 0)}
