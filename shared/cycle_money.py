"""A cycle's money as the operator sees it (design §4.1): `segments`, `estimated_cost` and `cost`.

Counts come from set-based statements grouped by the contact's phone prefix (`shared.cost_estimate`) and, for
a text with placeholders, by each contact's SMS parts (`shared.personal_parts`), so an estimate costs one
query whatever the audience size. Planning records it in the cycle's plan; a cycle's answer reads it there.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from sqlalchemy import String, func, select, true, type_coerce
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement

from shared import cost_estimate, personal_parts, placeholders, segments, sender_rules
from shared.cycle_items import of_cycle
from shared.models import Call, Contact, Cycle, CycleItem, Message
from shared.settings import Settings, get_settings


@dataclass(frozen=True)
class SmsBill:
    """What a cycle's SMS are billed as: contacts and parts per phone prefix, and the most parts of one text.

    `parts` counts each contact's own text (with `{name}`, a long name is billed its extra part, not the
    whole audience), so the estimate is what AT would charge, not a worst case times everyone.
    """

    contacts: dict[str, int]
    parts: dict[str, int]
    segments: segments.Segments

    def as_plan(self) -> dict[str, Any]:
        """The keys planning records in the cycle's plan, so a cycle's answer never counts them again."""
        return {"sms_by_prefix": self.contacts, "sms_parts_by_prefix": self.parts, "segments": self.segments.as_dict()}


def money_keys(settings: Settings, bill: SmsBill, voice: int) -> dict[str, Any]:
    """`segments` and `estimated_cost` for these SMS and calls."""
    return cost_estimate.summary(settings, bill.parts, voice, bill.segments)


def sms_bill(session: Session, message: str, sms_contacts: ColumnElement[bool]) -> SmsBill:
    """The bill for `message` sent to the contacts `sms_contacts` picks: one statement, and one more per
    country whose SMS carry a promotional sender id's opt-out after the text (shared/sender_rules.py), which
    is billed in its parts like the text."""
    return sms_bill_and_groups(session, message, sms_contacts, true())[0]


def sms_bill_and_groups(
    session: Session,
    message: str,
    audience: ColumnElement[bool],
    sms: ColumnElement[bool],
    group_characters: int | None = None,
) -> tuple[SmsBill, dict[str, str]]:
    """`sms_bill` for the contacts of `audience` that `sms` picks and, with `group_characters`, the groups of
    the audience's numbers sharing their first `group_characters` characters, each with its lowest number
    (planning's send windows go by them, worker/cycles/window_holds.py).

    For a text without placeholders, both come from one pass over the audience, the SMS that carry an opt-out
    (a promotional sender id's) counted apart from the same groups: a second pass was a tenth of a plan at a
    million contacts (0.58 s against 0.37 of wall time, issue 15); each country's opt-out pass, 5 %. A
    text with placeholders is measured per contact in a pass over the SMS contacts alone (in parallel on
    Postgres), which costs less than measuring them in the pass over the whole audience."""
    settings = get_settings()
    suffixes = sender_rules.suffixes(settings.at_sender_kind, settings.promotional_opt_out_text)
    plain_text = not placeholders.is_personal(message)
    if group_characters is not None and plain_text and all(len(p) <= group_characters for p in suffixes):
        groups, sms_per_group = _groups(session, audience, sms, group_characters)
        return _split_by_suffix(message, suffixes, sms_per_group), groups
    bills, rest = [], sms
    for prefix, suffix in suffixes.items():
        with_suffix = Contact.phone.startswith(prefix, autoescape=True)
        bills.append(_bill(session, message, audience & sms & with_suffix, suffix))
        rest = rest & ~with_suffix
    plain = _bill(session, message, audience & rest, "")
    if group_characters is None:
        return _combined(plain, bills), {}
    groups, _counted = _groups(session, audience, None, group_characters)
    return _combined(plain, bills), groups


def _split_by_suffix(message: str, suffixes: dict[str, str], sms_per_group: dict[str, int]) -> SmsBill:
    """The bill of a text without placeholders from its SMS counted per number group: a group's prefix says
    which suffix its SMS carry (each suffix's number prefix is no longer than a group's)."""
    counted: dict[str, dict[str, int]] = {}
    for group, n in sms_per_group.items():
        suffix = next((suffix for prefix, suffix in suffixes.items() if group.startswith(prefix)), "")
        bill_prefix = group[: cost_estimate.PREFIX_CHARACTERS]
        per_prefix = counted.setdefault(suffix, {})
        per_prefix[bill_prefix] = per_prefix.get(bill_prefix, 0) + n
    plain = _same_bill(message, "", counted.pop("", {}))
    return _combined(plain, [_same_bill(message, suffix, contacts) for suffix, contacts in counted.items()])


def _combined(plain: SmsBill, bills: list[SmsBill]) -> SmsBill:
    """Bills of disjoint contacts as one; `segments` the most parts of any text sent (the plain text's when
    no other has a contact)."""
    contacts, parts = dict(plain.contacts), dict(plain.parts)
    most = plain.segments
    for bill in bills:
        for prefix, n in bill.contacts.items():
            contacts[prefix] = contacts.get(prefix, 0) + n
            parts[prefix] = parts.get(prefix, 0) + bill.parts[prefix]
        if bill.contacts and (bill.segments.parts, bill.segments.encoding) > (most.parts, most.encoding):
            most = bill.segments
    return SmsBill(contacts, parts, most)


def _bill(session: Session, message: str, sms_contacts: ColumnElement[bool], suffix: str) -> SmsBill:
    """The bill for `message`, followed by `suffix`, sent to the contacts `sms_contacts` picks, in one statement.

    A text with placeholders is counted per contact in SQL (shared/personal_parts.py); one without is the
    same for everyone and counted exactly here. With no contact at all, `segments` is the text without a name.
    """
    if not placeholders.is_personal(message):
        prefix = cost_estimate.prefix_expr(Contact.phone).label("prefix")
        counted = session.execute(select(prefix, func.count()).where(sms_contacts).group_by(prefix)).all()
        return _same_bill(message, suffix, {str(p): int(n) for p, n in counted})
    measured = personal_parts.per_contact_select(message, sms_contacts, suffix).subquery()
    rows = session.execute(
        select(measured.c.prefix, measured.c.ucs2, measured.c.parts, func.count()).group_by(
            measured.c.prefix, measured.c.ucs2, measured.c.parts
        )
    ).all()
    contacts: dict[str, int] = {}
    parts: dict[str, int] = {}
    for prefix, _ucs2, each, n in rows:
        contacts[str(prefix)] = contacts.get(str(prefix), 0) + int(n)
        parts[str(prefix)] = parts.get(str(prefix), 0) + int(n) * int(each)
    if not rows:
        return SmsBill({}, {}, segments.count(placeholders.render(message) + suffix))
    # The most parts; between two encodings at as many parts, UCS-2 (it is the one a reader should check).
    most, ucs2 = max((int(each), int(u)) for _p, u, each, _n in rows)
    return SmsBill(contacts, parts, segments.Segments(segments.UCS2 if ucs2 else segments.GSM7, most))


def _groups(
    session: Session, audience: ColumnElement[bool], billed: ColumnElement[bool] | None, characters: int
) -> tuple[dict[str, str], dict[str, int]]:
    """The groups of the audience's numbers sharing their first `characters` characters, each with its lowest
    number, and, with `billed`, how many of the contacts it picks each group has (those with any): one
    statement."""
    if characters < cost_estimate.PREFIX_CHARACTERS:
        raise ValueError(f"groups of {characters} characters cannot give the bill's prefixes")
    group = cost_estimate.prefix_expr(Contact.phone, characters)
    counts = [func.count().filter(billed)] if billed is not None else []
    rows = session.execute(select(group, func.min(Contact.phone), *counts).where(audience).group_by(group)).all()
    counted = {str(row[0]): int(row[2]) for row in rows if billed is not None and row[2]}
    return {str(row[0]): str(row[1]) for row in rows}, counted


def _same_bill(message: str, suffix: str, contacts: dict[str, int]) -> SmsBill:
    """The bill of a text without placeholders sent to these contacts per prefix."""
    same = segments.count(placeholders.render(message) + suffix)
    return SmsBill(contacts, {p: n * same.parts for p, n in contacts.items()}, same)


def planned_sms(session: Session, cycle_id: int) -> ColumnElement[bool]:
    """SQL: the contact has an SMS item in the cycle."""
    items = select(CycleItem.contact_id).where(
        of_cycle(session, cycle_id), type_coerce(CycleItem.channel, String) == "sms"
    )
    return Contact.id.in_(items)


def recorded_bill(session: Session, cycle: Cycle) -> SmsBill:
    """A cycle's bill as planning recorded it; counted from its items for a cycle not planned yet (no items:
    nothing to count) or planned before the plan recorded it."""
    plan = cycle.plan or {}
    if {"sms_by_prefix", "sms_parts_by_prefix", "segments"} <= plan.keys():
        recorded = segments.Segments(plan["segments"]["encoding"], int(plan["segments"]["parts"]))
        return SmsBill(plan["sms_by_prefix"], plan["sms_parts_by_prefix"], recorded)
    if "sms_by_prefix" in plan and not placeholders.is_personal(cycle.message):
        same = segments.count(placeholders.render(cycle.message))
        contacts = plan["sms_by_prefix"]
        return SmsBill(contacts, {p: n * same.parts for p, n in contacts.items()}, same)
    return sms_bill(session, cycle.message, planned_sms(session, cycle.id))


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
