"""A cycle's outcomes as CSV (`GET /api/cycles/<id>/results.csv`, `reach cycle export ID`), and the follow-up
list of those it did not reach (`unreached.csv`, `--unreached`): one row per contact of the cycle.

Streamed a page of items at a time (one keyset query each), so a cycle of a million contacts never sits in
memory; every cell goes through shared/csv_safe.py.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from typing import Any

from sqlalchemy import Row, Select, String, and_, or_, select, type_coerce
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement

from shared.csv_safe import stream_pages
from shared.cycle_items import of_cycle
from shared.models import Call, Contact, Cycle, CycleItem, Message

PAGE = 5000
HEADER = (
    "phone",
    "name",
    "channel",
    "item_state",
    "sms_status",
    "sms_failure_reason",
    "call_status",
    "hangup_cause",
    "cost",
    "currency",
)
#: What "reached" means: AT reported the SMS delivered, or the call was answered (or the customer confirmed the
#: message on USSD: `CycleItem.confirmed_at`).
DELIVERED = "Success"
ANSWERED = "answered"


def cycle_exists(session: Session, cycle_id: int) -> bool:
    return session.get(Cycle, cycle_id) is not None


def results_csv(
    sessions: Callable[[], AbstractContextManager[Session]], cycle_id: int, *, unreached: bool = False
) -> Iterator[str]:
    """The cycle's rows as CSV text, PAGE items at a time; with `unreached`, only the contacts not reached."""

    def fetch(after: int) -> Sequence[Row[Any]]:
        with sessions() as session:
            return session.execute(_page(of_cycle(session, cycle_id), after, unreached)).all()

    return stream_pages(HEADER, fetch, _row, key=lambda row: row.id, page_size=PAGE)


def _page(in_cycle: ColumnElement[bool], after: int, unreached: bool) -> Select[Any]:
    query = (
        select(
            CycleItem.id,
            Contact.phone,
            Contact.name,
            type_coerce(CycleItem.channel, String).label("channel"),
            type_coerce(CycleItem.state, String).label("state"),
            Message.status.label("sms_status"),
            Message.failure_reason,
            Message.cost,
            Message.currency.label("sms_currency"),
            Call.status.label("call_status"),
            Call.hangup_cause,
            Call.amount,
            Call.currency.label("call_currency"),
        )
        .join(Contact, Contact.id == CycleItem.contact_id)
        .outerjoin(Message, Message.id == CycleItem.message_id)
        .outerjoin(Call, Call.id == CycleItem.call_id)
        .where(in_cycle, CycleItem.id > after)
        .order_by(CycleItem.id)
        .limit(PAGE)
    )
    return query.where(not_reached()) if unreached else query


def not_reached() -> ColumnElement[bool]:
    """SQL, over an item joined to its message and its call: the cycle did not reach the contact (no delivered
    SMS, no answered call, not read and confirmed on USSD: issue 14). NULL-safe: no report and no call is
    "not reached", not unknown."""
    return and_(
        or_(Message.status.is_(None), Message.status != DELIVERED),
        or_(Call.outcome.is_(None), Call.outcome != ANSWERED),
        CycleItem.confirmed_at.is_(None),
    )


def _row(row: Row[Any]) -> tuple[object, ...]:
    costs = [c for c in (row.cost, row.amount) if c is not None]
    currency = row.sms_currency or row.call_currency
    return (
        row.phone,
        row.name,
        row.channel,
        row.state,
        row.sms_status,
        row.failure_reason,
        row.call_status,
        row.hangup_cause,
        sum(costs) if costs else None,
        currency,
    )
