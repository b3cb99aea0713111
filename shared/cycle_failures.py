"""Who a cycle did not reach, and why: the table of the dashboard's cycle page (`GET /dashboard/cycles/<id>`).

"Not reached" is shared/cycle_export.py's rule (`not_reached`), the one the unreached.csv follow-up list uses.
A page is a keyset window over the cycle's items in id order, read through the primary key over the cycle's
range of ids (shared/cycle_items.py): at most SCAN_LIMIT items are looked at, and the first PAGE_SIZE of them
not reached are shown. A cycle of a million contacts, almost all reached, so costs a bounded read per page and
never the whole cycle; the page says where the next one starts (`after`) even when its window held fewer than
a page of them.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Row, Select, String, func, select, type_coerce
from sqlalchemy.orm import Session

from shared.cycle_export import not_reached
from shared.cycle_items import of_cycle
from shared.models import Call, Channel, Contact, CycleItem, Message

PAGE_SIZE = 50
#: Items a page looks at, at most, to find its PAGE_SIZE contacts not reached.
SCAN_LIMIT = 20000


@dataclass(frozen=True)
class NotReached:
    """One contact of the cycle it did not reach: what AT said about its SMS or its call."""

    item_id: int
    phone: str | None  # None once the contact was erased
    name: str | None
    channel: str
    state: str
    status: str | None  # the SMS's delivery status (or AT's answer to the send), or the call's status
    reason: str | None  # the SMS's failureReason, or the call's hangup cause
    network_code: str | None
    note: str | None  # why it was not sent, or what happens next (the item's or the send's error)
    at: datetime | None  # when that was last known


@dataclass(frozen=True)
class FailurePage:
    rows: list[NotReached]
    #: The item id the next page starts after; None when no item of the cycle is left to look at.
    next_after: int | None


def window_statement(in_cycle: ColumnElement[bool], after: int, scan: int) -> Select[Any]:
    """The ids of the cycle's next `scan` items after `after` (`in_cycle`: shared/cycle_items.py `of_cycle`): an
    index range, never the whole cycle."""
    return select(CycleItem.id).where(in_cycle, CycleItem.id > after).order_by(CycleItem.id).limit(scan)


def failures_page(session: Session, cycle_id: int, after: int = 0) -> FailurePage:
    """The cycle's contacts not reached, after item `after`: up to PAGE_SIZE, from a window of SCAN_LIMIT items."""
    window = window_statement(of_cycle(session, cycle_id), after, SCAN_LIMIT).subquery()
    bounds = select(func.min(window.c.id), func.max(window.c.id), func.count()).select_from(window)
    first_seen, last_seen, seen = session.execute(bounds).one()
    if last_seen is None:
        return FailurePage([], None)
    rows = [_not_reached(row) for row in session.execute(rows_statement(cycle_id, first_seen, last_seen))]
    if len(rows) == PAGE_SIZE:
        return FailurePage(rows, rows[-1].item_id)
    more = seen == SCAN_LIMIT and _has_items_after(session, cycle_id, last_seen)
    return FailurePage(rows, last_seen if more else None)


def rows_statement(cycle_id: int, first: int, last: int) -> Select[Any]:
    """The first PAGE_SIZE items not reached among the cycle's items in [first, last], with what AT said.

    The window is given by its bounds, not joined: joined to a subquery of its ids, Postgres may hash-join
    them against a scan of every cycle's items. Both bounds are the window's own ids, so the range is narrow
    whichever index the planner walks."""
    voice = CycleItem.channel == Channel.VOICE
    return (
        select(
            CycleItem.id,
            Contact.phone,
            Contact.name,
            type_coerce(CycleItem.channel, String).label("channel"),
            type_coerce(CycleItem.state, String).label("state"),
            func.coalesce(Message.status, Message.send_status).label("sms_status"),
            Message.failure_reason,
            Message.network_code,
            Message.send_error,
            Call.status.label("call_status"),
            Call.hangup_cause,
            Call.send_error.label("call_error"),
            CycleItem.error,
            func.coalesce(Message.status_at, Call.ended_at, CycleItem.updated_at).label("at"),
            voice.label("voice"),
        )
        .outerjoin(Contact, Contact.id == CycleItem.contact_id)
        .outerjoin(Message, Message.id == CycleItem.message_id)
        .outerjoin(Call, Call.id == CycleItem.call_id)
        .where(CycleItem.cycle_id == cycle_id, CycleItem.id.between(first, last), not_reached())
        .order_by(CycleItem.id)
        .limit(PAGE_SIZE)
    )


def _not_reached(row: Row[Any]) -> NotReached:
    return NotReached(
        item_id=row.id,
        phone=row.phone,
        name=row.name,
        channel=row.channel,
        state=row.state,
        status=row.call_status if row.voice else row.sms_status,
        reason=row.hangup_cause if row.voice else row.failure_reason,
        network_code=None if row.voice else row.network_code,
        note=(row.call_error if row.voice else row.send_error) or row.error,
        at=row.at,
    )


def _has_items_after(session: Session, cycle_id: int, item_id: int | None) -> bool:
    """Whether the cycle has an item after `item_id`: one probe of the index, so the last page says it is last."""
    if item_id is None:
        return False
    statement = window_statement(of_cycle(session, cycle_id), item_id, 1)
    return session.scalar(statement) is not None
