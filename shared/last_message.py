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

from sqlalchemy import Connection, and_, func, or_, select, union_all, update
from sqlalchemy.orm import Session

from shared import cycle_export
from shared.cycle_items import of_cycle
from shared.models import Call, Contact, CycleItem, Message


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
    """The cycle's `reached`: its contacts reached by the one rule the follow-up list uses (`cycle_export.
    not_reached`: a delivered SMS, an answered call, or the message confirmed on USSD), and how many confirmed
    on USSD. One pass over the cycle's items, each joined to its own message and call of the same cycle."""
    row = session.execute(
        select(
            func.count().filter(~cycle_export.not_reached()),
            func.count().filter(CycleItem.confirmed_at.is_not(None)),
        )
        .select_from(CycleItem)
        .outerjoin(Message, and_(Message.id == CycleItem.message_id, Message.cycle_id == cycle_id))
        .outerjoin(Call, and_(Call.id == CycleItem.call_id, Call.cycle_id == cycle_id))
        .where(of_cycle(session, cycle_id))
    ).one()
    return {"contacts": int(row[0]), "ussd_confirmed": int(row[1])}
