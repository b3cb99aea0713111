"""A DoNotDisturbRejection (AT's 409, at-api.md §2.2): the SMS was refused for the hour, not for good.

AT refuses a promotional sender id's SMS to a Nigerian number in the NCC's quiet hours (at-api.md §13). The
item goes back `pending`, waiting for its window (`waiting`), due when its SMS window and its country's
promotional window (shared/sender_rules.py) next open together after the refusal. Once: a second refusal of
the same item means AT holds the number DND whatever the hour (it needs the transactional route), so the item
fails saying so, and the contact is undelivered like the DLR failureReason `DoNotDisturbRejection`.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime
from zoneinfo import ZoneInfo

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from shared import cycle_control, sender_rules
from shared.at_results import SmsRecipient
from shared.models import Channel, CycleItem, ItemState, Message
from shared.status_policy import Action, Kind, decide, rules_of
from shared.windows import Window, next_closing, next_common_opening, zone_of
from worker import outcomes
from worker.cycles import items, window_holds
from worker.cycles.items import Claimed, finish_items

#: What a second refusal says, after AT's status (`DoNotDisturbRejection again after ...`).
AGAIN = (
    "again after waiting for the promotional window: AT holds this number DND, so it needs a transactional sender id"
)
NO_WINDOW = "and no promotional window is known for this number's country (shared/sender_rules.py)"


def wait_for_window(session: Session, cycle_id: int, refused: Sequence[tuple[Claimed, SmsRecipient]]) -> list[int]:
    """Put refused items back to wait for their window; fail those refused before. Returns the failed
    items' ids (a same-cycle fallback may call them)."""
    if not refused:
        return []
    at = items.now()  # the module's, which tests move
    waiting, failed = _sorted_out(session, cycle_id, refused, at)
    for (opening, why), item_ids in waiting.items():
        session.execute(
            update(CycleItem)
            .where(CycleItem.id.in_(sorted(item_ids)))
            .values(
                state=ItemState.PENDING,
                lease_until=None,
                next_attempt_at=opening,
                waiting_for_window=True,
                error=why,
                updated_at=at,
            )
            .execution_options(synchronize_session=False)
        )
        cycle_control.cancel_returned(session, item_ids)
    for error, claims in failed.items():
        finish_items(session, claims, ItemState.FAILED, error)
        outcomes.apply_contact_action(session, [c.contact_id for c in claims], Action.UNDELIVERED)
    return [c.item_id for claims in failed.values() for c in claims]


def _sorted_out(
    session: Session, cycle_id: int, refused: Sequence[tuple[Claimed, SmsRecipient]], at: datetime
) -> tuple[dict[tuple[datetime, str], list[int]], dict[str, list[Claimed]]]:
    """The items that wait, by (opening, why), and those that fail, by why."""
    again = _refused_before(session, [claimed for claimed, _r in refused])
    window = window_holds.cycle_window(session, cycle_id, Channel.SMS)
    waiting: dict[tuple[datetime, str], list[int]] = defaultdict(list)
    failed: dict[str, list[Claimed]] = defaultdict(list)
    for claimed, recipient in refused:
        if claimed.item_id in again:
            failed[f"{recipient.status} {AGAIN}"].append(claimed)
            continue
        why = outcomes.send_error(recipient, decide(Kind.SEND, recipient.status_code))
        rule = sender_rules.rule_of(claimed.phone)
        limits = [(window, zone_of(claimed.phone))] + ([(rule.window, rule.zone)] if rule else [])
        opening = _opening_after_refusal(limits, at) if rule else None
        if opening is None:
            failed[f"{why} {NO_WINDOW}"].append(claimed)
        else:
            waiting[(opening, why)].append(claimed.item_id)
    return waiting, failed


def _opening_after_refusal(limits: list[tuple[Window, ZoneInfo]], at: datetime) -> datetime | None:
    """The windows' next common opening; when they are open now (AT refused while we thought them open: a
    clock apart, a sender id not known as promotional), the one after they next close."""
    if next_common_opening(limits, at) == at:
        at = next_closing(limits, at) or at
    return next_common_opening(limits, at)


def _refused_before(session: Session, batch: Sequence[Claimed]) -> set[int]:
    """Items with an earlier message AT refused the same way (this attempt's messages aside)."""
    codes = [int(code) for code, rule in rules_of(Kind.SEND).items() if rule.action is Action.WAIT_FOR_WINDOW]
    return set(
        session.scalars(
            select(Message.cycle_item_id).where(
                Message.cycle_item_id.in_([c.item_id for c in batch]),
                Message.id.not_in([c.row_id for c in batch]),
                Message.send_status_code.in_(codes),
            )
        )
    )
