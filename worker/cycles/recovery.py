"""Completion and recovery: finish cycles, adopt or resend interrupted sends, find work to resume."""

from __future__ import annotations

import logging
from datetime import timedelta

from sqlalchemy import ColumnElement, ScalarSelect, Select, Update, exists, func, select, update
from sqlalchemy.orm import Session

from shared.cycles import pending_on, waiting_for_report
from shared.models import (
    Call,
    Channel,
    Cycle,
    CycleItem,
    CycleState,
    ItemState,
    Message,
)
from shared.settings import get_settings
from shared.store import CallbackInbox
from worker import fallback, outcomes, unknown_sends
from worker.cycles.items import (
    Claimed,
    finish_item,
    finish_items,
    now,
    retry_later,
)
from worker.ingest import apply_pending_dlrs
from worker.unknown_sends import unmatched_report

log = logging.getLogger(__name__)


def finish_if_done(session: Session, cycle_id: int) -> bool:
    """Mark a dispatching cycle done when nothing of it is left to send or to hear back from."""
    return session.execute(finish_statement(cycle_id)).rowcount == 1


def finish_statement(cycle_id: int) -> Update:
    """The one statement that finishes a cycle, so its state and its items are read in one snapshot: checks
    in statements of their own let a plan commit (or an item be given back) between the look and the write,
    and a cycle with every item pending was called done and never sent.

    One probe per partial index: pending items of each channel (ix_cycle_items_due_sms, _voice) and claimed or
    submitting ones (ix_cycle_items_cycle_id_state, which holds only items past pending)."""
    pending = [first_pending(cycle_id, channel) for channel in Channel]
    in_flight = exists().where(
        CycleItem.cycle_id == cycle_id, CycleItem.state.in_([ItemState.CLAIMED, ItemState.SUBMITTING])
    )
    calls_open = exists().where(
        CycleItem.cycle_id == cycle_id,
        CycleItem.state == ItemState.SENT,
        Call.id == CycleItem.call_id,
        Call.ended_at.is_(None),  # a call past its limit is done already (calls.record_overdue_calls)
    )
    # A same-cycle fallback call still to come (worker/fallback.py). Not an EXISTS: Postgres guesses from the
    # columns' statistics that such rows are common and seq-scans cycle_items for one (80 ms over 200k items
    # for a cycle with none); ORDER BY the index's column makes it read ix_cycle_items_fallback_due (0.04 ms).
    fallback_due = (
        select(CycleItem.id)
        .where(CycleItem.cycle_id == cycle_id, waiting_for_report())
        .order_by(CycleItem.fallback_at)
        .limit(1)
        .scalar_subquery()
    )
    return (
        update(Cycle)
        .where(
            Cycle.id == cycle_id,
            Cycle.state == CycleState.DISPATCHING,
            *(first.is_(None) for first in pending),
            ~in_flight,
            ~calls_open,
            fallback_due.is_(None),
        )
        .values(state=CycleState.DONE, finished_at=now())
    )


def reconcile_interrupted(session: Session, inbox: CallbackInbox, grace: timedelta) -> dict[str, int]:
    """Items left `submitting` by a dispatcher that died: adopt what AT shows it sent, resend the rest, and
    adopt reports that came for first attempts after they were sent again (worker/unknown_sends.py).

    An SMS is adopted when a delivery report for its number arrived after the claim and matches no
    message of ours; a call when its callbacks adopted it (ingest). Anything else is sent again once its
    lease end plus `grace` has passed *and* every callback received before then has been applied, so a
    report still waiting in the inbox cannot be mistaken for a send that never happened.
    """
    oldest_pending = inbox.oldest_received_at()  # before the evidence is read (see may_send_again)
    stale = list(
        session.execute(
            select(
                CycleItem.id,
                CycleItem.contact_id,
                CycleItem.channel,
                CycleItem.message_id,
                CycleItem.call_id,
                CycleItem.lease_until,
            )
            .where(CycleItem.state == ItemState.SUBMITTING, CycleItem.lease_until < now())
            .with_for_update(skip_locked=True)
            .limit(1000)
        ).all()
    )
    counts = {"adopted": 0, "resent": 0, "waiting": 0}
    for item_id, contact_id, channel, message_id, call_id, lease_until in stale:
        # A same-cycle fallback call's item keeps its SMS's message id too: the row is the channel's.
        claimed = Claimed(item_id, contact_id, "", (call_id if channel is Channel.VOICE else message_id) or 0)
        if adopt(session, channel, claimed):
            counts["adopted"] += 1
        elif unknown_sends.may_send_again(lease_until + grace, oldest_pending):
            send_again(session, channel, claimed)
            counts["resent"] += 1
        else:
            counts["waiting"] += 1
    late_window = timedelta(hours=get_settings().unmatched_dlr_hours)
    counts["adopted_late"] = unknown_sends.adopt_late_reports(session, late_window)
    return counts


def send_again(session: Session, channel: Channel, claimed: Claimed) -> None:
    """Send an item whose outcome is unknown once more, or give it up if that was its second lost answer:
    each lost answer may be a message AT delivered, and "at most one message per cycle" outranks "reached
    in this cycle" (a proxy failing every request must not text a customer every few seconds)."""
    model = Message if channel is Channel.SMS else Call
    if unknown_sends.resent_before(session, model, claimed.item_id):
        finish_items(session, [claimed], ItemState.FAILED, unknown_sends.GAVE_UP)
        log.warning("cycle item %s: AT's answer was lost twice; not sent again", claimed.item_id)
    else:
        retry_later(session, [claimed], model, "outcome unknown (dispatcher interrupted); sending again", 10**6)
    # Its report may still come: adopt_late_reports looks for it.
    session.execute(update(model).where(model.id == claimed.row_id).values(send_state=unknown_sends.UNANSWERED))


def adopt(session: Session, channel: Channel, claimed: Claimed) -> bool:
    if channel is Channel.VOICE:
        call = session.get(Call, claimed.row_id)
        if call is None or call.session_id is None:
            return False
        call.send_state = "sent"
        finish_item(session, claimed, ItemState.DONE if call.ended_at else ItemState.SENT)
        return True
    message = session.get(Message, claimed.row_id)
    if message is None:
        return False
    orphan = unmatched_report(session, message.phone, message.created_at)
    if orphan is None:
        return False
    message.at_message_id, message.send_state = orphan, "sent"
    finish_item(session, claimed, ItemState.SENT)
    fallback.await_reports(session, [claimed.item_id])
    outcomes.mark_contact_pending(session, claimed.contact_id, message.id)
    session.flush()
    apply_pending_dlrs(session, [orphan])
    return True


def cycles_to_nudge(session: Session) -> list[tuple[int, bool, bool]]:
    """Dispatching cycles with due SMS or voice items, for housekeeping to restart their dispatchers.

    One probe of each channel's claim index per dispatching cycle: the first due entry answers (counting them
    read every due item of a cycle, 900,000 at a million contacts, every 15 s)."""
    rows = session.execute(nudge_statement()).all()
    return [(cycle_id, sms, voice) for cycle_id, sms, voice in rows if sms or voice]


def nudge_statement() -> Select[tuple[int, bool, bool]]:
    """Each dispatching cycle, and whether it has due SMS and due voice items."""
    due = [first_pending(Cycle.id, channel, due_now=True).is_not(None) for channel in (Channel.SMS, Channel.VOICE)]
    return select(Cycle.id, *due).where(Cycle.state == CycleState.DISPATCHING)


def first_pending(cycle_id: int | ColumnElement[int], channel: Channel, *, due_now: bool = False) -> ScalarSelect[int]:
    """SQL: the id of the cycle's first pending item of `channel` (due now, with `due_now`), or NULL: one probe of
    the channel's claim index. Not an EXISTS: while most of a cycle's items are pending, Postgres guesses one is
    found at once and seq-scans cycle_items for it, past every item already sent (180-260 ms at a million); the
    ORDER BY of the index's column makes it read the index."""
    where = [CycleItem.cycle_id == cycle_id, pending_on(channel)]
    if due_now:
        where.append(CycleItem.next_attempt_at <= func.now())
    return select(CycleItem.id).where(*where).order_by(CycleItem.next_attempt_at).limit(1).scalar_subquery()


def stuck_planning(session: Session, older_than: timedelta = timedelta(minutes=2)) -> list[int]:
    return list(
        session.scalars(
            select(Cycle.id).where(Cycle.state == CycleState.PLANNING, Cycle.created_at < now() - older_than)
        )
    )


def open_cycles(session: Session) -> list[int]:
    return list(session.scalars(select(Cycle.id).where(Cycle.state == CycleState.DISPATCHING)))
