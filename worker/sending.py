"""One-off sends (the operator's `POST /communicate`): claim the row, call AT once, record the answer.

A row is claimed by moving it from `queued` to `submitting` in its own committed transaction before AT
is called, so a duplicate or redelivered task finds nothing to do and cannot send twice.

When AT may have acted but no answer of AT's can be read (`maybe_sent`: a read timeout, a reset after the
request was written, a proxy's 502/504 page, a truncated body, a worker killed mid-request), the row
stays `submitting` and is not retried blindly: housekeeping adopts it when AT's callbacks show it went
out, and sends it again only after the grace with nothing to show (worker/unknown_sends.py has the rule).
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from shared import live_calls, metrics
from shared.at_client import AtError, AtRejected, AtTransient, SmsRecipient, get_at_client, maybe_sent
from shared.db import session_scope
from shared.models import Call, Message
from shared.status_policy import Action
from shared.store import get_store
from shared.voice_script import VoiceScript
from worker import outcomes
from worker.ingest import apply_pending_dlrs
from worker.unknown_sends import GAVE_UP, UNANSWERED, may_send_again, unmatched_report

log = logging.getLogger(__name__)

SUBMITTING, SENT, FAILED, QUEUED = "submitting", "sent", "failed", "queued"
#: Longer than a send's whole retry schedule (5 tries, backoff capped at 300 s): nothing is waiting for it.
ORPHAN_AFTER = timedelta(minutes=10)
#: The error a one-off send carries while it is sent again after a lost answer: a second loss ends it.
RESENT_AFTER_LOSS = "AT shows nothing of the unanswered request: sending again"


def claim(session: Session, model: type[Message] | type[Call], row_id: int) -> bool:
    result = session.execute(
        update(model)
        .where(model.id == row_id, model.send_state == QUEUED)
        .values(send_state=SUBMITTING, claimed_at=datetime.now(UTC))
    )
    return result.rowcount == 1


def release(model: type[Message] | type[Call], row_id: int, error: str) -> None:
    """Give a claimed row back for a retry after a transient AT error (nothing was sent)."""
    with session_scope() as session:
        session.execute(
            update(model)
            .where(model.id == row_id, model.send_state == SUBMITTING)
            .values(send_state=QUEUED, send_error=error)
        )


def fail(model: type[Message] | type[Call], row_id: int, error: str) -> None:
    with session_scope() as session:
        session.execute(update(model).where(model.id == row_id).values(send_state=FAILED, send_error=error))


def unanswered(model: type[Message] | type[Call], row_id: int, exc: AtError) -> str:
    """AT may have acted although it did not answer: leave the row `submitting` for housekeeping, or, when
    this was already the one resend after a lost answer, stop: `unanswered` is never sent again, and a late
    report for it is still matched (see worker/cycles/recovery.py `send_again` for why)."""
    with session_scope() as session:
        row = session.get_one(model, row_id)
        if row.send_error == RESENT_AFTER_LOSS:
            row.send_state, row.send_error = UNANSWERED, GAVE_UP
        else:
            row.send_error = (
                f"AT did not answer ({exc}); it may have acted: waiting for its callbacks before sending again"
            )
        error = row.send_error
    log.warning("%s %s: %s", model.__tablename__, row_id, error)
    return "unknown"


def send_message(message_id: int) -> str:
    """Send one queued SMS; returns what happened. `AtTransient` propagates for the task to retry."""
    with session_scope() as session:
        if not claim(session, Message, message_id):
            log.warning("message %s is not queued; nothing to send", message_id)
            return "skipped"
        message = session.get_one(Message, message_id)
        text, phone = message.text, message.phone
    try:
        result = get_at_client().send_sms(text, [phone])
    except AtError as exc:
        if maybe_sent(exc):
            return unanswered(Message, message_id, exc)
        if isinstance(exc, AtRejected):
            fail(Message, message_id, str(exc))
            return "rejected"
        raise  # known not sent and transient: the task retries
    recipient = next((r for r in result.recipients if r.number == phone), None)
    if recipient is None:
        fail(Message, message_id, f"AT accepted no recipient: {result.summary}")
        return "rejected"
    with session_scope() as session:
        return record_sms_result(session, message_id, recipient)


def record_sms_result(session: Session, message_id: int, recipient: SmsRecipient) -> str:
    """AT's answer to a one-off send; a transient refusal (statusCode 500/501) is retried by the task."""
    message = session.get_one(Message, message_id)
    rule = outcomes.record_recipient(session, message, recipient)
    if rule.action is Action.RETRY:
        raise AtTransient(f"{recipient.status} ({recipient.status_code}): {rule.why}")
    if rule.action is Action.PAUSE:  # no cycle to pause: the operator reads why on the message
        message.send_state = FAILED
        message.send_error = f"{recipient.status} ({recipient.status_code}): {rule.why}"
    session.flush()
    if rule.action is Action.ACCEPTED and recipient.message_id:
        apply_pending_dlrs(session, [recipient.message_id])  # a report may have come first
    return "sent" if rule.action is Action.ACCEPTED else rule.action.value


def place_call(call_id: int) -> str:
    """Place one queued call, the number marked as being called meanwhile (`shared.live_calls`)."""
    with session_scope() as session:
        if not claim(session, Call, call_id):
            log.warning("call %s is not queued; nothing to place", call_id)
            return "skipped"
        call = session.get_one(Call, call_id)
        phone, script = call.phone, VoiceScript(call.message or "", audio_url=call.audio_url, language=call.language)
    with live_calls.placing(get_store(), phone):
        return _request_call(call_id, phone, script.encode())


def _request_call(call_id: int, phone: str, message: str) -> str:
    """AT's `/call` for one claimed call; its script (`VoiceScript.encode`) is kept under the sessionId AT
    returns, for the live callback to speak, before the call is recorded placed."""
    try:
        result = get_at_client().call([phone])
    except AtError as exc:
        if maybe_sent(exc):
            return unanswered(Call, call_id, exc)
        if isinstance(exc, AtRejected):
            fail(Call, call_id, str(exc))
            metrics.add(metrics.worker_client(), [("reach_calls_placed", {"result": "failed"}, 1)])
            return "rejected"
        raise  # known not sent and transient: the task retries
    entry = next((e for e in result.entries if e.session_id), None)
    if entry is None:
        reason = result.error_message or ", ".join(e.status for e in result.entries) or "no entry"
        fail(Call, call_id, f"AT did not queue the call: {reason}")
        metrics.add(metrics.worker_client(), [("reach_calls_placed", {"result": "failed"}, 1)])
        return "rejected"
    get_store().remember_script(message, phone=phone, session_id=entry.session_id)
    with session_scope() as session:
        call = session.get_one(Call, call_id)
        # AT may have called back first (ingest adopts the call): keep the final status it recorded.
        call.session_id = call.session_id or entry.session_id
        call.send_state, call.status = SENT, call.status or entry.status
        metrics.count_on_commit(session, "reach_calls_placed", result="queued")
    return "placed"


def orphaned(session: Session, older_than: timedelta = ORPHAN_AFTER) -> list[tuple[str, int]]:
    """One-off sends still `queued` long after they were made: their task was never published (broker
    down when the operator asked) or was lost. Claiming is atomic, so publishing again is safe."""
    cutoff = datetime.now(UTC) - older_than
    found = []
    for task, model in (("reach.send.sms", Message), ("reach.send.call", Call)):
        stale = select(model.id).where(model.send_state == QUEUED, model.cycle_id.is_(None), model.created_at < cutoff)
        found += [(task, row_id) for row_id in session.scalars(stale)]
    return found


def settle_unanswered(
    session: Session, grace: timedelta, oldest_pending: datetime | None, settle_after: timedelta
) -> tuple[int, list[tuple[str, int]]]:
    """One-off sends left `submitting` for over `settle_after`, the dispatch lease (AT's answer lost, or
    the worker died mid-request): adopt those AT's callbacks show it acted on; queue again those with
    nothing to show once their claim plus `grace` has passed and no callback received before that is still
    waiting (`oldest_pending`: the inbox's oldest, read before this; worker/unknown_sends.py has the rule).
    Returns how many were adopted, and the (task, id) pairs to publish once this transaction has committed."""
    now = datetime.now(UTC)
    adopted, resend = 0, []
    for task, model in (("reach.send.sms", Message), ("reach.send.call", Call)):
        claimed_at = func.coalesce(model.claimed_at, model.created_at)
        rows = session.scalars(
            select(model)
            .where(model.cycle_id.is_(None), model.send_state == SUBMITTING, claimed_at < now - settle_after)
            .with_for_update(skip_locked=True)
            .limit(500)
        ).all()
        for row in rows:
            if adopt_unanswered(session, row):
                adopted += 1
            elif may_send_again((row.claimed_at or row.created_at) + grace, oldest_pending):
                row.send_state, row.send_error = QUEUED, RESENT_AFTER_LOSS
                resend.append((task, row.id))
    return adopted, resend


def adopt_unanswered(session: Session, row: Message | Call) -> bool:
    if isinstance(row, Call):  # a callback for its number adopted it (worker/ingest/voice.py `_lock_call`)
        if row.session_id is None:
            return False
        row.send_state = SENT
        return True
    orphan = unmatched_report(session, row.phone, row.claimed_at or row.created_at)
    if orphan is None:
        return False
    row.at_message_id, row.send_state = orphan, SENT
    outcomes.mark_contact_pending(session, row.contact_id, row.id)
    session.flush()
    apply_pending_dlrs(session, [orphan])
    return True
