"""A cycle's money as the operator sees it (design §4.1): `segments`, `estimated_cost` and `cost`.

Counts come from set-based statements grouped by the contact's phone prefix (`shared.cost_estimate`), so
an estimate costs one query whatever the audience size.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from sqlalchemy import String, func, select, type_coerce
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement

from shared import cost_estimate, segments
from shared.models import Call, Contact, CycleItem, Message
from shared.settings import Settings


def money_keys(settings: Settings, message: str, sms_by_prefix: dict[str, int], voice: int) -> dict[str, Any]:
    """`segments` and `estimated_cost` for `message` sent to these SMS contacts (by phone prefix) and calls.

    `message` is the text that is billed: with placeholders, the longest text rendered for the audience.
    """
    return cost_estimate.summary(settings, sms_by_prefix, voice, segments.count(message))


def audience_sms_by_prefix(session: Session, tagged: ColumnElement[bool]) -> dict[str, int]:
    """Reachable contacts of the cycle's tags (`tagged`, `cycles.in_tags`) routed to SMS, per phone prefix
    (`cost_estimate.prefix_expr`), in one statement.

    Planning records it in the cycle's plan, so a cycle's answer (and each dashboard row) never joins its
    items to the contacts again.
    """
    from shared.cycles import Channel, channel_expr, reachable

    prefix = cost_estimate.prefix_expr(Contact.phone).label("prefix")
    rows = session.execute(
        select(prefix, func.count()).where(reachable(), tagged, channel_expr() == Channel.SMS.value).group_by(prefix)
    ).all()
    return {str(p): int(n) for p, n in rows}


def planned_sms_by_prefix(session: Session, cycle_id: int) -> dict[str, int]:
    """A planned cycle's SMS items per phone prefix, from its items: for cycles planned before the plan
    recorded it."""
    prefix = cost_estimate.prefix_expr(Contact.phone).label("prefix")
    rows = session.execute(
        select(prefix, func.count())
        .select_from(CycleItem)
        .join(Contact, Contact.id == CycleItem.contact_id)
        .where(CycleItem.cycle_id == cycle_id, type_coerce(CycleItem.channel, String) == "sms")
        .group_by(prefix)
    ).all()
    return {str(p): int(n) for p, n in rows}


def charged(session: Session, cycle_id: int) -> dict[str, Decimal]:
    """What AT charged for a cycle so far, per currency (SMS costs and call amounts from AT's answers)."""
    totals: dict[str, Decimal] = {}
    for model, column, currency in ((Message, Message.cost, Message.currency), (Call, Call.amount, Call.currency)):
        for cur, amount in session.execute(
            select(currency, func.sum(column))
            .where(model.cycle_id == cycle_id, column.is_not(None), currency.is_not(None))
            .group_by(currency)
        ):
            totals[cur] = totals.get(cur, Decimal(0)) + Decimal(amount)
    return dict(sorted(totals.items()))


def cost_keys(totals: dict[str, Decimal], settings: Settings) -> dict[str, Any]:
    """`cost` in the shape of `estimated_cost` and, under `cost_by_currency`, every currency AT charged in.

    AT charges an account in one currency; should a cycle have charges in several, `cost` is the one in
    COST_CURRENCY (or the first), and `cost_by_currency` has them all.
    """
    currency = settings.cost_currency if settings.cost_currency in totals or not totals else next(iter(totals))
    return {
        "cost": cost_estimate.money(totals.get(currency, Decimal(0)), currency),
        "cost_by_currency": {cur: str(amount) for cur, amount in totals.items()},
    }
