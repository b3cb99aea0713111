"""Calls: placed one at a time under the in-flight cap; AT's answer recorded on the call."""

from __future__ import annotations

import logging
from datetime import timedelta

from sqlalchemy import func, literal, select, update
from sqlalchemy.orm import Session

from shared import cycles, metrics
from shared.at_client import AtError, AtRejected, CallEntry, get_at_client, maybe_sent
from shared.db import session_scope
from shared.models import (
    Call,
    Channel,
    Cycle,
    CycleItem,
    CycleState,
    ItemState,
)
from shared.settings import Settings, get_settings
from shared.status_policy import Action
from shared.store import get_store
from worker import outcomes
from worker.cycles.items import (
    Claimed,
    claim,
    finish_item,
    give_back,
    now,
    retry_later,
)

log = logging.getLogger(__name__)

#: A call AT accepted but never reported back on stops counting against the in-flight cap after this.
CALL_STALE = timedelta(minutes=15)
#: Voice calls that AT did not queue for these entry statuses mean an account problem.
CALL_PAUSE_STATUSES = {"InsufficientCredit", "InsufficientBalance"}


def calls_in_flight(session: Session) -> int:
    return (
        session.scalar(
            select(func.count())
            .select_from(Call)
            .where(
                Call.send_state.in_(["submitting", "sent"]),
                Call.ended_at.is_(None),
                Call.created_at > now() - CALL_STALE,
            )
        )
        or 0
    )


def claim_calls(cycle: Cycle, settings: Settings) -> list[Claimed]:
    with session_scope() as session:
        # Serialise the in-flight count across dispatchers so the cap holds with many workers.
        lock_calls(session)
        room = settings.max_calls_in_flight - calls_in_flight(session)
        if room <= 0:
            return []
        claimed = []
        for item_id, contact_id, phone in claim(session, cycle.id, Channel.VOICE, room):
            call = Call(
                contact_id=contact_id,
                cycle_id=cycle.id,
                cycle_item_id=item_id,
                phone=phone,
                direction="Outbound",
                message=cycle.voice_message or cycle.message,
                send_state="submitting",
            )
            session.add(call)
            session.flush()
            session.execute(update(CycleItem).where(CycleItem.id == item_id).values(call_id=call.id))
            claimed.append(Claimed(item_id, contact_id, phone, call.id))
        return claimed


def lock_calls(session: Session) -> None:
    if session.get_bind().dialect.name == "postgresql":
        session.execute(select(func.pg_advisory_xact_lock(literal(0x7265616368))))  # "reach"


def dispatch_calls(cycle_id: int) -> str:
    """Place the cycle's due calls while there is room under the cap; `idle`, `waiting` or `paused`."""
    settings = get_settings()
    with session_scope() as session:
        cycle = session.get(Cycle, cycle_id)
        if cycle is None or cycle.state is not CycleState.DISPATCHING:
            return "paused" if cycle and cycle.state is CycleState.PAUSED else "idle"
        session.expunge(cycle)
    claimed = claim_calls(cycle, settings)
    for one in claimed:
        if place_call(cycle, one, settings) == "paused":
            with session_scope() as session:
                rest = claimed[claimed.index(one) + 1 :]
                give_back(session, rest, Call, "cycle paused")
            return "paused"
    with session_scope() as session:
        pending = session.scalar(
            select(func.count())
            .select_from(CycleItem)
            .where(
                CycleItem.cycle_id == cycle_id, CycleItem.channel == Channel.VOICE, CycleItem.state == ItemState.PENDING
            )
        )
    return "waiting" if pending else "idle"


def place_call(cycle: Cycle, claimed: Claimed, settings: Settings) -> str:
    message = cycle.voice_message or cycle.message
    get_store().remember_script(message, phone=claimed.phone)
    try:
        result = get_at_client().call([claimed.phone])
    except AtError as exc:
        return unanswered_call(cycle, claimed, exc, settings)
    entry = next(iter(result.entries), None)
    with session_scope() as session:
        return record_call(session, cycle.id, claimed, entry, result.error_message, message)


def unanswered_call(cycle: Cycle, claimed: Claimed, exc: AtError, settings: Settings) -> str:
    """No answer of AT's to record. Maybe sent: AT may be ringing them, so the call stays `submitting`
    for its callbacks to adopt (`reconcile_interrupted`); never placed again now. Known not sent:
    retried after a backoff (transient) or given back with the cycle paused."""
    with session_scope() as session:
        if maybe_sent(exc):
            why = f"AT may have acted ({exc}): waiting for its callbacks before calling again"
            session.execute(update(Call).where(Call.id == claimed.row_id).values(send_error=why))
            log.warning("cycle %s: call %s: %s", cycle.id, claimed.row_id, why)
            return "unknown"
        if not isinstance(exc, AtRejected):
            retry_later(session, [claimed], Call, str(exc), settings.send_attempts)
            return "retry"
        cycles.pause(session, cycle.id, f"AT refused the call request: {exc}")
        give_back(session, [claimed], Call, str(exc))
    return "paused"


def record_call(
    session: Session, cycle_id: int, claimed: Claimed, entry: CallEntry | None, error: str | None, message: str
) -> str:
    call = session.get_one(Call, claimed.row_id)
    if entry is not None and entry.session_id:
        get_store().remember_script(message, phone=claimed.phone, session_id=entry.session_id)
        # The final callback may already have adopted this call (ingest.voice._lock_call); keep its session id.
        call.session_id = call.session_id or entry.session_id
        call.send_state, call.status = "sent", call.status or entry.status
        metrics.count_on_commit(session, "reach_calls_placed", result="queued")
        if call.ended_at is None:
            finish_item(session, claimed, ItemState.SENT)
        return "sent"
    status = entry.status if entry else (error or "no entry")
    call.send_state, call.send_error = "failed", f"AT did not queue the call: {status}"
    metrics.count_on_commit(session, "reach_calls_placed", result="failed")
    if status in CALL_PAUSE_STATUSES or (entry is None and error):
        cycles.pause(session, cycle_id, f"AT did not queue calls: {status}")
        give_back(session, [claimed], Call, status)
        return "paused"
    finish_item(session, claimed, ItemState.FAILED, call.send_error)
    if status == "InvalidPhoneNumber":
        outcomes.apply_contact_action(session, claimed.contact_id, Action.INVALID)
    return "failed"
