"""Sends whose AT request was cut off (AT may or may not have acted): when one may be sent again, and what a
delivery report that comes after that does. One rule for cycle items (`recovery.reconcile_interrupted`) and
one-off sends (`sending.settle_unanswered`):

1. Adopted, never sent again, when AT's callbacks show it went out: a report for the number that matches no
   message of ours (`sending.unmatched_report`), or a call's callbacks (ingest adopts the call).
2. Otherwise sent again once, when both hold:
   - its cutoff has passed: the end of its lease (or its claim) plus the grace. The grace is the larger of
     UNKNOWN_SEND_GRACE_SECONDS and AT's recent pace, the P99 of the time from a send to its first report
     (`report_delay_p99`), the latter capped at UNKNOWN_SEND_GRACE_MAX_SECONDS: when AT is slow to report,
     "no report yet" means less, so the wait grows with it;
   - every callback received before that cutoff has been applied: the oldest callback still queued or in a
     drainer's batch was received after the cutoff (`oldest_received_at` on the inbox). Steady traffic does
     not hold a resend back; only a backlog older than the cutoff does, and that one may hold its report.
3. A report that still comes for the first attempt after it was sent again (AT slower than the grace) is
   adopted onto that first attempt's row (`adopt_late_reports`): nothing is lost, the contact follows its
   newest message, and the duplicate is counted (`reach_sms_sent_twice`) and logged at WARNING. Such a
   report is looked for during UNMATCHED_DLR_HOURS.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

from sqlalchemy import Select, exists, select, update
from sqlalchemy.orm import Session, aliased

from shared import metrics, report_delays
from shared.cycles import SENT_TWICE
from shared.models import Call, CycleItem, DlrEvent, ItemState, Message
from shared.settings import Settings
from worker import fallback, outcomes
from worker.ingest import apply_pending_dlrs

log = logging.getLogger(__name__)

#: `messages.send_state` of a first attempt whose answer never came and that was sent again.
UNANSWERED = "unanswered"
#: Why an item whose AT answer was lost on two attempts is not sent a third time (worker/cycles/recovery.py).
GAVE_UP = "AT's answer was lost on two attempts: not sent again (a late report for either still counts)"
#: AT's pace is read from the newest messages written, those from the last day: bounded work every run.
DELAY_SAMPLE = 1000
#: Below this many reported sends the P99 is just the slowest one: a single outlier would set the grace.
DELAY_MIN_SAMPLE = 100
#: Rows looked at per housekeeping run for late reports (resent sends are rare: a crash's batch at most).
LATE_BATCH = 500


def now() -> datetime:
    return datetime.now(UTC)


def unmatched_report(session: Session, phone: str, since: datetime) -> str | None:
    """The AT id of a delivery report for `phone`, received since `since`, that matches no message of
    ours: the proof that a send whose answer never came did go out (AT's id was in the lost answer)."""
    return session.scalar(unmatched_report_query(phone, since))


def unmatched_report_query(phone: str, since: datetime) -> Select[tuple[str]]:
    """Served by `ix_dlr_events_phone_received` (tests/test_retention.py reads the plan)."""
    return (
        select(DlrEvent.at_message_id)
        .where(
            DlrEvent.phone == phone,
            DlrEvent.received_at >= since - timedelta(seconds=5),
            ~exists().where(Message.at_message_id == DlrEvent.at_message_id),
        )
        .order_by(DlrEvent.id)
        .limit(1)
    )


def report_delay_p99(session: Session) -> timedelta | None:
    """The P99 of the time from a send to its first delivery report, over the newest `DELAY_SAMPLE` messages
    of the last day that got one (shared/report_delays.py); None with fewer than `DELAY_MIN_SAMPLE`. The figure
    is how long reports that come take, which is what the grace must outlast."""
    delays = report_delays.first_report_delays(session, DELAY_SAMPLE)
    return report_delays.percentile(delays, 0.99) if len(delays) >= DELAY_MIN_SAMPLE else None


def effective_grace(session: Session, settings: Settings) -> timedelta:
    floor = timedelta(seconds=settings.unknown_send_grace_seconds)
    observed = report_delay_p99(session)
    if observed is None:
        return floor
    return max(floor, min(observed, timedelta(seconds=settings.unknown_send_grace_max_seconds)))


def may_send_again(cutoff: datetime, oldest_pending: datetime | None) -> bool:
    """Rule 2: the cutoff has passed and no callback received before it waits to be applied.

    `oldest_pending` must be read before the evidence (AT's reports in the database) is looked at: a callback
    applied in between is then either still counted as pending or already visible."""
    return cutoff < now() and (oldest_pending is None or oldest_pending > cutoff)


def resent_before(session: Session, model: type[Message] | type[Call], item_id: int) -> bool:
    """Whether an earlier attempt of this cycle item already ended unanswered and was sent again."""
    return bool(session.scalar(select(exists().where(model.cycle_item_id == item_id, model.send_state == UNANSWERED))))


def adopt_late_reports(session: Session, window: timedelta) -> int:
    """Rule 3, for cycle SMS sent again in the last `window`: returns how many first attempts were adopted."""
    rows = session.scalars(
        select(Message)
        .where(Message.send_state == UNANSWERED, Message.created_at > now() - window)
        .order_by(Message.id)
        .limit(LATE_BATCH)
        .with_for_update(skip_locked=True)
    ).all()
    adopted = 0
    for message in rows:
        # The newer attempt's own report could pass for this one's until AT's answer to it is recorded.
        if newer_attempt(session, message, "submitting"):
            continue
        orphan = unmatched_report(session, message.phone, message.created_at)
        if orphan is not None:
            adopt_late(session, message, orphan)
            adopted += 1
    return adopted


def newer_attempt(session: Session, message: Message, send_state: str) -> bool:
    newer = aliased(Message)
    return bool(
        session.scalar(
            select(
                exists().where(
                    newer.cycle_item_id == message.cycle_item_id,
                    newer.id > message.id,
                    newer.send_state == send_state,
                )
            )
        )
    )


def adopt_late(session: Session, message: Message, at_message_id: str) -> None:
    message.at_message_id, message.send_state = at_message_id, "sent"
    if newer_attempt(session, message, "sent"):
        message.send_error = SENT_TWICE
        metrics.count_on_commit(session, "reach_sms_sent_twice")
        log.warning(
            "message %s to contact %s was sent twice: AT's report %s came after the resend",
            message.id,
            message.contact_id,
            at_message_id,
        )
    elif take_back_resend(session, message):
        message.send_error = "AT had sent it after all: its report came before it was sent again"
        outcomes.mark_contact_pending(session, message.contact_id, message.id)
    session.flush()
    apply_pending_dlrs(session, [at_message_id])


def take_back_resend(session: Session, message: Message) -> bool:
    """The report came before the resend went out: the item is done with this message, not sent again."""
    result = session.execute(
        update(CycleItem)
        .where(CycleItem.id == message.cycle_item_id, CycleItem.state == ItemState.PENDING)
        .values(state=ItemState.SENT, message_id=message.id, error=None, lease_until=None, updated_at=now())
    )
    if result.rowcount != 1:
        return False
    fallback.await_reports(session, [message.cycle_item_id] if message.cycle_item_id else [])
    return True
