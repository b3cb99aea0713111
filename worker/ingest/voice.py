"""Voice callbacks: each step stored once; the final one records the call's outcome on the call and contact."""

from __future__ import annotations

import logging
from datetime import datetime

from sqlalchemy import case, func, select, update
from sqlalchemy.orm import Session

from shared import call_grades, metrics, reachability
from shared.callbacks import (
    VoiceEvent,
    phone_or_raw,
    to_decimal,
    to_int,
)
from shared.db import insert_for
from shared.models import (
    Call,
    CallEvent,
    Contact,
    ContactStatus,
)
from shared.status_policy import Action, Kind, decide
from worker import fallback
from worker.ingest.contacts import CONTACT_STATUS_AFTER, find_contact_id

log = logging.getLogger(__name__)

_contacts = Contact.__table__


def apply_voice_event(session: Session, received_at: datetime, event: VoiceEvent) -> None:
    inserted = session.scalar(
        insert_for(session, CallEvent)
        .values(
            session_id=event.session_id,
            event_key=event.event_key,
            is_active=event.live,
            call_session_state=event.call_session_state,
            status=event.status,
            hangup_cause=event.hangup_cause,
            dtmf_digits=event.dtmf_digits,
            received_at=received_at,
        )
        .on_conflict_do_nothing(index_elements=["session_id", "event_key"])
        .returning(CallEvent.id)
    )
    if inserted is None:
        return  # the same step posted twice
    call = _lock_call(session, event, received_at)
    if event.dtmf_digits:
        call.dtmf_digits = event.dtmf_digits
        pressed_one = event.dtmf_digits.strip() == "1"
        call.acknowledged = call.acknowledged or pressed_one
        if pressed_one and call.send_state is not None:
            # Only a call Reach placed: an inbound caller's number can be spoofed.
            reachability.mark_reached(session, call.phone, received_at, reachability.ReachedBy.CALL)
    if event.live:
        if call.ended_at is None:
            call.call_session_state = event.call_session_state or "Active"
        else:
            call_grades.grade_call(call)  # a key press drained after the final callback
        return
    _finish_call(session, call, event, received_at)


def _lock_call(session: Session, event: VoiceEvent, at: datetime) -> Call:
    """The call row for this session, created for calls we did not place (inbound) and locked."""
    phone = phone_or_raw(event.caller_number) or ""
    # AT may call back before `/call` has answered us: adopt our own call to this number still in flight.
    session.execute(
        update(Call)
        .where(
            Call.id
            == select(Call.id)
            .where(Call.phone == phone, Call.session_id.is_(None), Call.send_state == "submitting")
            .order_by(Call.id.desc())
            .limit(1)
            .scalar_subquery(),
            ~select(Call.id).where(Call.session_id == event.session_id).exists(),
        )
        .values(session_id=event.session_id)
    )
    session.execute(
        insert_for(session, Call)
        .values(
            session_id=event.session_id,
            phone=phone,
            direction=event.direction or "Inbound",
            contact_id=find_contact_id(session, phone),
            created_at=at,
        )
        .on_conflict_do_nothing(index_elements=["session_id"])
    )
    return session.scalars(select(Call).where(Call.session_id == event.session_id).with_for_update()).one()


def _finish_call(session: Session, call: Call, event: VoiceEvent, at: datetime) -> None:
    outcome = call_outcome(event)
    call.status = event.status
    call.call_session_state = event.call_session_state
    call.hangup_cause = event.hangup_cause
    call.duration_seconds = to_int(event.duration_in_seconds)
    call.amount = to_decimal(event.amount)
    call.currency = event.currency_code or None
    call.recording_url = event.recording_url or None
    call.outcome = outcome.value
    call.ended_at = at
    call_grades.grade_call(call)
    if call.send_state == "submitting" and call.cycle_id is not None:
        # AT's answer to `/call` was lost, but a final callback proves AT placed it. (One-off calls are
        # adopted by send housekeeping, which counts them: worker/sending.py `settle_unanswered`.)
        call.send_state = "sent"
    metrics.count_on_commit(
        session,
        "reach_calls_ended",
        hangup_cause=metrics.bounded(event.hangup_cause, Kind.HANGUP),
        outcome=outcome.value,
    )
    fallback.after_call_ended(session, call, outcome)
    if call.contact_id is None:
        return
    target = CONTACT_STATUS_AFTER.get(outcome) if outcome is Action.INVALID else None
    if target is not None:
        fallback.cancel_pending(session, [call.contact_id], "the number does not exist")
    status_col = _contacts.c.status
    session.execute(
        update(_contacts)
        .where(_contacts.c.id == call.contact_id)
        .values(
            last_call_status=event.status,
            last_hangup_cause=event.hangup_cause,
            last_call_at=at,
            status=case(
                (status_col == ContactStatus.OPTED_OUT.value, status_col),
                else_=func.coalesce(target.value if target else None, status_col),
            ),
            updated_at=func.now(),
        )
    )


def call_outcome(event: VoiceEvent) -> Action:
    """What a final voice callback means, through the policy table."""
    if event.hangup_cause:
        return decide(Kind.HANGUP, event.hangup_cause).action
    if (event.status or "") == "Success":
        return Action.ANSWERED
    return decide(Kind.HANGUP, None).action
