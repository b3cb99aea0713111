"""Send windows in a cycle (design §4.2): an item whose window is closed waits, `pending` and due at the
window's next opening (`waiting_for_window`), so nothing polls for it: housekeeping nudges its cycle once
it is due. Never dropped or failed, and its cycle is not done while it waits (a pending item).

Twice: planning sets each item's due time in its INSERT, the contacts grouped by number prefix (one zone
per group); a dispatcher checks again at claim, per number, and gives back an item whose window closed
meanwhile (or whose own zone differs from its group's). The window arithmetic is shared/windows.py's.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime, timedelta
from typing import TypeVar
from zoneinfo import ZoneInfo

from sqlalchemy import ColumnElement, case, false, func, literal, select, true, update
from sqlalchemy.orm import Session

from shared import cost_estimate, sender_rules
from shared.models import Channel, Contact, Cycle, CycleItem
from shared.settings import get_settings
from shared.windows import Window, next_common_opening, parse_window, zone_of

#: Planning reads one zone per group of numbers sharing their first characters: `+`, the calling code and
#: the first digits after it (an area code, where a country's zones follow them), from the group's lowest
#: number. A number whose own zone differs is caught at claim.
PLAN_PREFIX_CHARACTERS = 7
#: Rounds of claim-time holding in one claim: each holds a batch whose window is closed, so its items are no
#: longer due; the bound only guards against a database clock ahead of ours, which would keep them due.
MAX_HOLD_ROUNDS = 20
#: When a number's windows never meet (a guard: where they are set, such windows are refused).
NEVER_MEET_RETRY = timedelta(days=1)

K = TypeVar("K")


def windows_of(sms_window: str | None, call_window: str | None) -> dict[Channel, Window]:
    """A cycle's windows per channel: its own, else the settings'."""
    settings = get_settings()
    return {
        Channel.SMS: parse_window(sms_window or settings.sms_window),
        Channel.VOICE: parse_window(call_window or settings.call_window),
    }


def plan_prefix(phone: ColumnElement[str]) -> ColumnElement[str]:
    """A number's group, as SQL: what the plan's CASE arms list, spelled as the groups' GROUP BY read them
    (shared/cycle_money.py)."""
    return cost_estimate.prefix_expr(phone, PLAN_PREFIX_CHARACTERS)


def limits_of(channel: Channel, window: Window) -> Callable[[str], list[tuple[Window, ZoneInfo]]]:
    """Per number, every window its sends of `channel` must keep to: the channel's, in the customer's local
    time, and for SMS the sender id's promotional window in their country (shared/sender_rules.py)."""
    settings = get_settings()
    if channel is Channel.SMS and sender_rules.applies(settings.at_sender_kind):
        return lambda phone: [(window, zone_of(phone)), *sender_rules.limits(phone, settings.at_sender_kind)]
    return lambda phone: [(window, zone_of(phone))]


def _limited(channel: Channel, window: Window) -> bool:
    return not window.always or (channel is Channel.SMS and sender_rules.applies(get_settings().at_sender_kind))


def closed_windows(cycle: Cycle) -> dict[Channel, Callable[[str], list[tuple[Window, ZoneInfo]]]]:
    """The channels whose items a window may hold in this cycle, with each number's windows (`limits_of`):
    planning then reads its audience's number groups (`PLAN_PREFIX_CHARACTERS`) for `planned_due`."""
    windows = windows_of(cycle.sms_window, cycle.call_window)
    return {ch: limits_of(ch, window) for ch, window in windows.items() if _limited(ch, window)}


def planned_due(
    closed: dict[Channel, Callable[[str], list[tuple[Window, ZoneInfo]]]],
    groups: dict[str, str],
    channel: ColumnElement[str],
    at: datetime,
) -> tuple[ColumnElement[datetime], ColumnElement[bool]]:
    """For the plan's INSERT … SELECT over the contacts: each item's `next_attempt_at` (now, or its windows'
    next opening) and `waiting_for_window`, as SQL: one CASE arm per channel and opening, listing prefixes.
    `groups`: the audience's numbers by their first `PLAN_PREFIX_CHARACTERS` characters, each group's lowest
    number (its zone is the group's), read with the plan's SMS bill (shared/cycle_money.py)."""
    arms: list[tuple[ColumnElement[bool], datetime]] = []
    prefix = plan_prefix(Contact.phone)
    for ch, limits in closed.items():
        for opening, prefixes in _openings(limits, groups.items(), at).items():
            arms.append(((channel == ch.value) & prefix.in_(prefixes), opening))
    if not arms:
        return func.now(), false()
    due = case(*[(when, literal(opening, CycleItem.next_attempt_at.type)) for when, opening in arms], else_=func.now())
    return due, case(*[(when, true()) for when, _opening in arms], else_=false())


def hold_closed(session: Session, cycle_id: int, channel: Channel, ids: Sequence[int], at: datetime) -> list[int]:
    """Of items a dispatcher just locked, those whose window is open at `at`; the others go back `pending`,
    due at their window's next opening in their own number's zone, their attempt not counted."""
    if not ids:
        return []
    window = cycle_window(session, cycle_id, channel)
    if not _limited(channel, window):
        return list(ids)
    phones = session.execute(
        select(CycleItem.id, Contact.phone)
        .join(Contact, Contact.id == CycleItem.contact_id)
        .where(CycleItem.id.in_(ids))
    ).all()
    held: set[int] = set()
    for opening, item_ids in _openings(limits_of(channel, window), phones, at).items():
        session.execute(
            update(CycleItem)
            .where(CycleItem.id.in_(sorted(item_ids)))
            .values(next_attempt_at=opening, waiting_for_window=True, updated_at=at)
            .execution_options(synchronize_session=False)
        )
        held.update(item_ids)
    return [item_id for item_id in ids if item_id not in held]


def cycle_window(session: Session, cycle_id: int, channel: Channel) -> Window:
    """The window a cycle's items of `channel` keep to: the cycle's own, else the settings'."""
    row = session.execute(select(Cycle.sms_window, Cycle.call_window).where(Cycle.id == cycle_id)).one()
    return windows_of(row.sms_window, row.call_window)[channel]


def _openings(
    limits: Callable[[str], list[tuple[Window, ZoneInfo]]], keyed_phones: Iterable[tuple[K, str]], at: datetime
) -> dict[datetime, list[K]]:
    """The keys whose number's windows are not all open at `at`, by their next common opening. Windows that
    never meet (refused where they are set: Settings, shared/cycles.py) are looked at again a day later."""
    closed: dict[datetime, list[K]] = defaultdict(list)
    for key, phone in keyed_phones:
        opening = next_common_opening(limits(phone), at) or at + NEVER_MEET_RETRY
        if opening > at:
            closed[opening].append(key)
    return closed
