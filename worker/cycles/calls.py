"""Calls: placed one at a time under the in-flight cap; AT's answer recorded on the call."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from sqlalchemy import func, literal, select, update
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement

from shared import alerts, cycles, live_calls, metrics, prompts, voice_languages, voice_script
from shared.at_client import AtError, AtRejected, CallEntry, get_at_client, maybe_sent
from shared.db import session_scope
from shared.models import (
    Call,
    Channel,
    Contact,
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
    halted,
    now,
    read_cycle,
    retry_later,
)

log = logging.getLogger(__name__)

#: Voice calls that AT did not queue for these entry statuses mean an account problem.
CALL_PAUSE_STATUSES = {"InsufficientCredit", "InsufficientBalance"}
#: How fast text-to-speech speaks, to bound how long a `<Say>` lasts. AT documents no speaking rate and no
#: voice list (at-api.md §5.3, §13). Ordinary English speech is ~150 words a minute, about 14 characters a
#: second with spaces; 10 is a slow voice, so the bound errs long. Characters, not words: amounts, dates
#: and account numbers are read out one digit or group at a time.
TTS_CHARACTERS_PER_SECOND = 10
#: `Call.outcome` of a call AT accepted whose final callback did not come within `call_limit`: neither
#: answered nor a failure for the customer; a final callback that comes later replaces it.
UNKNOWN_OUTCOME = "unknown"
#: A call we asked AT for (or it accepted) and no final callback has ended yet.
_OPEN = (Call.send_state.in_(["submitting", "sent"]), Call.ended_at.is_(None), Call.outcome.is_(None))


def call_limit(message: str | None, settings: Settings) -> timedelta:
    """The longest a call Reach places can last, plus a margin: past it, a call with no final callback is
    no longer in flight. From the call's own text (`None`: the greeting, said when there is no script):

    - ring: CALL_RING_TIMEOUT_SECONDS. AT documents no ring timeout (at-api.md §5.1, §5.2: an unanswered
      call ends with `NO_ANSWER`, after a time it does not state);
    - the message, the confirm prompt and the thanks (`shared.voice_script.speak`, `thank`; the prompts of
      the language whose are longest, `shared.prompts`), spoken at TTS_CHARACTERS_PER_SECOND. A call that
      plays a recording is bounded by its text all the same: Reach does not know the recording's length;
    - the `<GetDigits>` wait, `voice_script.DIGITS_TIMEOUT_SECONDS` (our XML sets it; AT's default is 30 s,
      at-api.md §5.3);
    - CALL_LIMIT_MARGIN_SECONDS: AT's own call queue, the final callback's trip and AT's retries of it
      (none of them documented).
    """
    spoken = len(message or settings.voice_greeting) + prompts.longest("confirm") + prompts.longest("thanks")
    seconds = (
        settings.call_ring_timeout_seconds
        + spoken / TTS_CHARACTERS_PER_SECOND
        + voice_script.DIGITS_TIMEOUT_SECONDS
        + settings.call_limit_margin_seconds
    )
    return timedelta(seconds=seconds)


def _open_calls(session: Session, *conditions: ColumnElement[bool]) -> list[tuple[int, str | None, datetime]]:
    """(id, message, handed to AT at) of each open call: few, the in-flight cap bounds them."""
    started = func.coalesce(Call.claimed_at, Call.created_at)
    rows = session.execute(select(Call.id, Call.message, started).where(*_OPEN, *conditions)).all()
    return [(row[0], row[1], row[2]) for row in rows]


def calls_in_flight(session: Session, settings: Settings) -> int:
    """Open calls still within their `call_limit`: what counts against MAX_CALLS_IN_FLIGHT."""
    at = now()
    return sum(1 for _id, message, started in _open_calls(session) if started + call_limit(message, settings) > at)


def record_overdue_calls(session: Session, settings: Settings) -> int:
    """Calls AT accepted whose final callback is past their `call_limit` (lost: the receiver was down, say):
    outcome `unknown`, their cycle item done, so the slot is free and the cycle can finish. The contact is
    left as it was. Returns how many."""
    at = now()
    overdue = [
        call_id
        for call_id, message, started in _open_calls(session, Call.send_state == "sent")
        if started + call_limit(message, settings) <= at
    ]
    if not overdue:
        return 0
    # The WHERE again: a final callback applied since the read wins (statuses only move forward).
    marked = list(
        session.scalars(
            update(Call)
            .where(Call.id.in_(overdue), *_OPEN)
            .values(outcome=UNKNOWN_OUTCOME)
            .returning(Call.id)
            .execution_options(synchronize_session=False)
        )
    )
    if marked:
        session.execute(
            update(CycleItem)
            .where(CycleItem.call_id.in_(marked), CycleItem.state == ItemState.SENT)
            .values(
                state=ItemState.DONE,
                error="no final callback from AT within the call's limit: outcome unknown",
                lease_until=None,
                updated_at=at,
            )
            .execution_options(synchronize_session=False)
        )
        log.warning("%d calls got no final callback within their limit; recorded as unknown: %s", len(marked), marked)
    return len(marked)


def claim_calls(cycle: Cycle, settings: Settings) -> list[Claimed]:
    with session_scope() as session:
        # Serialise the in-flight count across dispatchers so the cap holds with many workers.
        lock_calls(session)
        room = settings.max_calls_in_flight - calls_in_flight(session, settings)
        if room <= 0:
            return []
        claimed = []
        items = claim(session, cycle.id, Channel.VOICE, room)
        contacts = contact_details(session, cycle, [contact_id for _i, contact_id, _p in items])
        for item_id, contact_id, phone in items:
            name, language = contacts.get(contact_id, (None, None))
            script = voice_languages.script_for(
                cycle.voice_languages,
                cycle.voice_message,
                cycle.message,
                language=language,
                default=settings.default_language,
                name=name,
                phone=phone,
            )
            message = script.text
            call = Call(
                contact_id=contact_id,
                cycle_id=cycle.id,
                cycle_item_id=item_id,
                phone=phone,
                direction="Outbound",
                message=message,
                language=script.language,
                audio_url=script.audio_url,
                send_state="submitting",
            )
            session.add(call)
            session.flush()
            session.execute(update(CycleItem).where(CycleItem.id == item_id).values(call_id=call.id))
            claimed.append(Claimed(item_id, contact_id, phone, call.id, message))
        return claimed


def contact_details(session: Session, cycle: Cycle, contact_ids: list[int]) -> dict[int, tuple[str | None, str | None]]:
    """The contacts' (name, language); the name only when the cycle's voice has placeholders."""
    personal = voice_languages.is_personal(cycle.voice_languages, cycle.voice_message, cycle.message)
    if not contact_ids:
        return {}
    rows = session.execute(select(Contact.id, Contact.name, Contact.language).where(Contact.id.in_(contact_ids)))
    return {row.id: (row.name if personal else None, row.language) for row in rows}


def lock_calls(session: Session) -> None:
    if session.get_bind().dialect.name == "postgresql":
        session.execute(select(func.pg_advisory_xact_lock(literal(0x7265616368))))  # "reach"


def dispatch_calls(cycle_id: int) -> str:
    """Place the cycle's due calls while there is room under the cap; `idle`, `waiting`, `paused` or
    `cancelled`. Calls go one at a time, so the cycle's state is read again before each: a pause or cancel
    stops the rest of a claimed batch at once (given back, or cancelled with their cycle)."""
    settings = get_settings()
    cycle = read_cycle(cycle_id)
    if cycle is None or cycle.state is not CycleState.DISPATCHING:
        return halted(cycle)
    claimed = claim_calls(cycle, settings)
    for index, one in enumerate(claimed):
        if index and not dispatching(cycle_id):
            return stop_calls(cycle_id, claimed[index:])
        if place_call(cycle, one, settings) == "paused":
            return stop_calls(cycle_id, claimed[index + 1 :])
    with session_scope() as session:
        pending = session.scalar(
            select(func.count())
            .select_from(CycleItem)
            .where(
                CycleItem.cycle_id == cycle_id,
                cycles.pending_on(Channel.VOICE),
                ~cycles.waiting_for_window(),  # no polling for a window: housekeeping nudges it when it opens
            )
        )
    return "waiting" if pending else "idle"


def dispatching(cycle_id: int) -> bool:
    cycle = read_cycle(cycle_id)
    return cycle is not None and cycle.state is CycleState.DISPATCHING


def stop_calls(cycle_id: int, rest: list[Claimed]) -> str:
    """The cycle left `dispatching` with calls of a claimed batch not placed: they go back (cancelled, in a
    cancelled cycle). Returns what the dispatcher says: `paused` or `cancelled`."""
    with session_scope() as session:
        give_back(session, rest, Call, "the cycle was paused or cancelled")
    return halted(read_cycle(cycle_id))


def place_call(cycle: Cycle, claimed: Claimed, settings: Settings) -> str:
    with live_calls.placing(get_store(), claimed.phone):  # until the call's message is kept (record_call)
        try:
            result = get_at_client().call([claimed.phone])
        except AtError as exc:
            return unanswered_call(cycle, claimed, exc, settings)
        entry = next(iter(result.entries), None)
        with session_scope() as session:
            return record_call(session, cycle.id, claimed, entry, result.error_message)


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
        alerts.on_at_refusal(session, exc)
        give_back(session, [claimed], Call, str(exc))
    return "paused"


def record_call(session: Session, cycle_id: int, claimed: Claimed, entry: CallEntry | None, error: str | None) -> str:
    call = session.get_one(Call, claimed.row_id)
    if entry is not None and entry.session_id:
        script = voice_script.VoiceScript(call.message, audio_url=call.audio_url, language=call.language)
        get_store().remember_script(script.encode(), phone=claimed.phone, session_id=entry.session_id)
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
