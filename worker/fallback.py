"""How a cycle's voice fallback reacts to callbacks: retry a busy or unanswered call later in the cycle,
cancel a call not yet placed when the SMS turns out to have been delivered after all, and, in a `same_cycle`
cycle (design §4.1), call in this same cycle a contact whose SMS failed or got no `Success` in time.

A same-cycle fallback lives on the contact's one cycle item (one per contact and cycle, a unique key):

    sms `sent`, fallback_at = AT's acceptance + FALLBACK_AFTER_SECONDS     (`await_reports`; `auto`: by network)
      ├─ `Success` first: fallback_at NULL, no call                        (`after_reports`)
      └─ a final failure, or fallback_at passes (housekeeping):            (`after_reports`, `start_due_calls`)
         voice `pending`, due now, fallback_at = when: the cycle's call dispatcher places it as any other call

The move from sms to voice is one conditional UPDATE (`channel = 'sms' AND state = 'sent'`), so a duplicate
or late report, a second housekeeping run or a restarted worker finds nothing left to move: one call at most.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, and_, event, exists, select, update
from sqlalchemy.orm import Session

from shared import cycle_control, cycles, incidents, report_delays
from shared.consent import cancel_pending
from shared.cycles import waiting_for_report
from shared.db import ids_in
from shared.models import Call, Channel, Contact, Cycle, CycleItem, CycleState, Fallback, ItemState, Message
from shared.settings import get_settings
from shared.status_policy import Action, dlr_outcome

log = logging.getLogger(__name__)

#: Fallback calls made due in one housekeeping run: far more than MAX_CALLS_IN_FLIGHT can place meanwhile.
DUE_BATCH = 1000
DELIVERED_FIRST = "the SMS was delivered before the call"
UNREACHABLE_NOW = "no fallback call: the contact can no longer be reached"
#: Cycles whose fallback calls became due in a transaction: their call dispatcher is nudged once it commits.
_NUDGE = "reach:fallback_nudge"


def now() -> datetime:
    return datetime.now(UTC)


def after_call_ended(session: Session, call: Call, outcome: Action) -> None:
    """A cycle's call ended: done, or (busy / no answer) called again later while retries remain."""
    if call.cycle_item_id is None:
        return
    item = session.get(CycleItem, call.cycle_item_id, with_for_update=True)
    if item is None or item.call_id != call.id or item.state in {ItemState.DONE, ItemState.CANCELLED}:
        return
    settings = get_settings()
    # A cancelled cycle calls nobody again; the call that was placed keeps its outcome.
    again = outcome is Action.RETRY_LATER and not cycle_control.is_cancelled(session, item.cycle_id)
    if again and item.attempts <= settings.call_retries:
        item.state, item.call_id, item.lease_until = ItemState.PENDING, None, None
        item.next_attempt_at = now() + timedelta(seconds=settings.call_retry_delay_seconds)
        item.error = f"call {item.attempts}: {call.hangup_cause}; calling again"
    else:
        item.state, item.lease_until, item.error = ItemState.DONE, None, None
    item.updated_at = now()


def cancel_fallback_calls(session: Session, contact_ids: Sequence[int]) -> int:
    """A late `Success` report: the customer has the SMS, so calls not yet placed are cancelled."""
    return cancel_pending(session, contact_ids, DELIVERED_FIRST, Channel.VOICE)


# -- same-cycle fallback ------------------------------------------------------------------------------------


def await_reports(session: Session, item_ids: Sequence[int]) -> int:
    """SMS items AT has just accepted: in a `same_cycle` cycle each waits FALLBACK_AFTER_SECONDS for a
    `Success` before it is called (with `auto`, its contact's network's wait: shared/report_delays.py).
    Returns how many wait."""
    accepted = now()
    return sum(
        _arm(session, ids, ItemState.SENT, accepted + timedelta(seconds=seconds))
        for seconds, ids in _by_wait(session, item_ids).items()
    )


def _by_wait(session: Session, item_ids: Sequence[int]) -> dict[int, list[int]]:
    """The items by how many seconds each waits (only `same_cycle` items are looked up: `_arm` skips others)."""
    settings = get_settings()
    if not item_ids or settings.fallback_after_seconds != "auto":
        return {settings.fallback_after_seconds: list(item_ids)} if item_ids else {}
    same_cycle = select(Cycle.id).where(Cycle.fallback == Fallback.SAME_CYCLE)
    rows = session.execute(
        select(CycleItem.id, CycleItem.contact_id).where(CycleItem.id.in_(item_ids), CycleItem.cycle_id.in_(same_cycle))
    ).all()
    waits = report_delays.waits_by_contact(session, [contact_id for _, contact_id in rows], settings)
    grouped: dict[int, list[int]] = {}
    for item_id, contact_id in rows:
        grouped.setdefault(waits[contact_id], []).append(item_id)
    return grouped


def call_instead(session: Session, item_ids: Sequence[int]) -> int:
    """SMS AT refused for a reason a call may get past (a send statusCode the status policy marks
    UNDELIVERED, such as 407 CouldNotRoute: "call instead"): in a `same_cycle` cycle, called at once."""
    if not _arm(session, item_ids, ItemState.FAILED, now()):
        return 0
    return start_calls(session, CycleItem.id.in_(sorted(item_ids)))


def _arm(session: Session, item_ids: Sequence[int], state: ItemState, at: datetime) -> int:
    if not item_ids:
        return 0
    same_cycle = select(Cycle.id).where(Cycle.fallback == Fallback.SAME_CYCLE)
    result = session.execute(
        update(CycleItem)
        .where(
            CycleItem.id.in_(sorted(item_ids)),
            CycleItem.channel == Channel.SMS,
            CycleItem.state == state,
            CycleItem.cycle_id.in_(same_cycle),
        )
        .values(fallback_at=at)
        .execution_options(synchronize_session=False)
    )
    return max(result.rowcount, 0)


def after_reports(session: Session, message_ids: Sequence[int]) -> None:
    """Delivery reports were applied to these messages: what each means for a fallback (the status policy
    table decides, `dlr_outcome`). Delivered: no call (a waiting one stops, a due one not yet placed is
    cancelled). A final failure: called at once. A number proved invalid or opted out: never called."""
    if not message_ids:
        return
    # From the messages to their items by primary keys (this runs for every drained batch of reports), and
    # only where the message is still the item's own.
    rows = session.execute(
        select(CycleItem.id, Message.status, Message.failure_reason)
        .select_from(Message)
        .join(CycleItem, (CycleItem.id == Message.cycle_item_id) & (CycleItem.message_id == Message.id))
        .where(
            ids_in(session, Message.id, message_ids), CycleItem.fallback_at.is_not(None), Message.status.is_not(None)
        )
    ).all()
    if not rows:
        return  # nothing waits on these messages (no same-cycle fallback): no statement below would change a row
    by_outcome: dict[Action, list[int]] = {}
    for item_id, status, reason in rows:
        by_outcome.setdefault(dlr_outcome(status, reason), []).append(item_id)
    delivered = by_outcome.get(Action.DELIVERED, [])
    stop_waiting(session, delivered, f"no fallback call: {DELIVERED_FIRST}")
    _cancel_due_calls(session, delivered)
    stop_waiting(session, by_outcome.get(Action.INVALID, []) + by_outcome.get(Action.OPT_OUT, []), UNREACHABLE_NOW)
    start_calls(session, CycleItem.id.in_(sorted(by_outcome.get(Action.UNDELIVERED, []))))


def start_due_calls(session: Session) -> int:
    """Housekeeping: SMS items whose fallback time has passed without a `Success` become calls, cycle by cycle
    (a range of ix_cycle_items_fallback_due each). Returns how many did."""
    open_cycles = select(Cycle.id).where(
        Cycle.fallback == Fallback.SAME_CYCLE, Cycle.state.in_([CycleState.DISPATCHING, CycleState.PAUSED])
    )
    started = 0
    allowed = incidents.calls_allowed(session)  # a carrier incident holds its network's calls
    for cycle_id in session.scalars(open_cycles).all():
        due = (
            select(CycleItem.id)
            .where(CycleItem.cycle_id == cycle_id, waiting_for_report(), CycleItem.fallback_at <= now(), allowed)
            .order_by(CycleItem.fallback_at)
            .limit(DUE_BATCH)
            .with_for_update(skip_locked=True)
        )
        ids = list(session.scalars(due))
        started += start_calls(session, CycleItem.id.in_(ids)) if ids else 0
    return started


def start_calls(session: Session, which: ColumnElement[bool]) -> int:
    """Turn waiting SMS items into due calls, each once (the WHERE is the state machine); a contact that
    cannot be reached now (opted out, invalid, erased) is not called. Returns how many became calls."""
    waiting = (
        which,
        waiting_for_report(),
        CycleItem.state.in_([ItemState.SENT, ItemState.FAILED]),
        incidents.calls_allowed(session),  # held by a carrier incident: they keep waiting
    )
    reachable = exists().where(Contact.id == CycleItem.contact_id, cycles.reachable())
    at = now()
    moved = session.execute(
        update(CycleItem)
        .where(*waiting, reachable)
        .values(
            channel=Channel.VOICE,
            state=ItemState.PENDING,
            next_attempt_at=at,
            fallback_at=at,
            attempts=0,  # the call gets its own CALL_RETRIES
            call_id=None,
            lease_until=None,
            error="fallback: the SMS was not delivered",
            updated_at=at,
        )
        .returning(CycleItem.id, CycleItem.cycle_id)
        .execution_options(synchronize_session=False)
    ).all()
    stop_waiting_where(session, and_(*waiting), UNREACHABLE_NOW)
    if moved:
        cycle_control.cancel_returned(session, [item_id for item_id, _ in moved])
        nudge_on_commit(session, {cycle_id for _, cycle_id in moved})
        log.info("%d fallback calls due in cycles %s", len(moved), sorted({c for _, c in moved}))
    return len(moved)


def stop_waiting(session: Session, item_ids: Sequence[int], why: str) -> None:
    if item_ids:
        stop_waiting_where(session, CycleItem.id.in_(sorted(item_ids)), why)


def stop_waiting_where(session: Session, which: ColumnElement[bool], why: str) -> None:
    """No fallback call for these SMS items: they stay `sent`, with why."""
    session.execute(
        update(CycleItem)
        .where(which, waiting_for_report())
        .values(fallback_at=None, error=why, updated_at=now())
        .execution_options(synchronize_session=False)
    )


def _cancel_due_calls(session: Session, item_ids: Sequence[int]) -> None:
    """Fallback calls of these items not yet claimed are cancelled (by the item: the contact's last message
    may since be another one, which `cancel_fallback_calls` goes by)."""
    if not item_ids:
        return
    session.execute(
        update(CycleItem)
        .where(
            CycleItem.id.in_(sorted(item_ids)),
            CycleItem.channel == Channel.VOICE,
            CycleItem.state == ItemState.PENDING,
            CycleItem.fallback_at.is_not(None),
        )
        .values(state=ItemState.CANCELLED, error=DELIVERED_FIRST, updated_at=now())
        .execution_options(synchronize_session=False)
    )


# -- nudging the call dispatcher once the calls are committed -----------------------------------------------


def nudge_on_commit(session: Session, cycle_ids: set[int]) -> None:
    session.info.setdefault(_NUDGE, set()).update(cycle_ids)


@event.listens_for(Session, "after_commit")
def _nudge(session: Session) -> None:
    cycle_ids = session.info.pop(_NUDGE, None)
    if not cycle_ids:
        return
    from worker.celery import app  # here, not at import: the ingest functions are used without a worker too

    for cycle_id in sorted(cycle_ids):
        try:
            app.send_task("reach.cycle.dispatch_calls", args=[cycle_id])
        except Exception as exc:  # housekeeping nudges due calls anyway (cycles_to_nudge)
            log.warning("could not nudge the call dispatcher of cycle %s: %s", cycle_id, exc)


@event.listens_for(Session, "after_soft_rollback")
def _forget(session: Session, previous_transaction: Any) -> None:
    if previous_transaction.parent is None:
        session.info.pop(_NUDGE, None)
