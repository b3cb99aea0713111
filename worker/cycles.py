"""Running a communication cycle: plan it in one statement, then dispatch SMS in batches and calls under
a cap, each item claimed once.

An item's life: `pending` → (claimed and its Message/Call row written, in one committed transaction)
`submitting` → AT is asked → `sent` | `failed` | back to `pending` for a retry. A dispatcher that dies
while AT is answering leaves items `submitting`; housekeeping adopts them when a delivery report shows
they went out, and sends them again only when none came (see `reconcile_interrupted`). Celery messages
are only nudges: every dispatcher re-reads Postgres, so a duplicate or lost nudge changes nothing.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import String, exists, func, insert, literal, select, type_coerce, update
from sqlalchemy.orm import Session

from shared import cycles, metrics
from shared.at_client import AtRejected, AtTransient, CallEntry, SmsSendResult, get_at_client, maybe_sent
from shared.db import insert_for, session_scope
from shared.models import (
    Call,
    Channel,
    Contact,
    Cycle,
    CycleItem,
    CycleState,
    ItemState,
    Message,
)
from shared.settings import Settings, get_settings
from shared.status_policy import Action
from shared.store import CallbackInbox, get_store
from worker import outcomes
from worker.ingest import apply_pending_dlrs
from worker.sending import unmatched_report

log = logging.getLogger(__name__)

_messages = Message.__table__

#: A call AT accepted but never reported back on stops counting against the in-flight cap after this.
CALL_STALE = timedelta(minutes=15)
#: Voice calls that AT did not queue for these entry statuses mean an account problem.
CALL_PAUSE_STATUSES = {"InsufficientCredit", "InsufficientBalance"}


def now() -> datetime:
    return datetime.now(UTC)


def backoff(attempt: int) -> timedelta:
    """5 s, 10 s, 20 s ... capped at 5 minutes (broker countdowns stay short, celery-reliability §0)."""
    return timedelta(seconds=min(300, 5 * 2 ** max(0, attempt - 1)))


# -- planning -----------------------------------------------------------------------------------------------


def plan_cycle(session: Session, cycle_id: int) -> dict[str, Any] | None:
    """One item per reachable contact, routed in SQL in one statement; safe to run twice."""
    cycle = session.get(Cycle, cycle_id, with_for_update=True)
    if cycle is None or cycle.state is not CycleState.PLANNING:
        return None
    columns = ["cycle_id", "contact_id", "channel", "state", "attempts", "next_attempt_at", "updated_at"]
    rows = select(
        literal(cycle_id),
        Contact.id,
        cycles.channel_expr(),
        literal(ItemState.PENDING.value),
        literal(0),
        func.now(),
        func.now(),
    ).where(cycles.reachable())
    session.execute(
        insert_for(session, CycleItem)
        .from_select(columns, rows)
        .on_conflict_do_nothing(index_elements=["cycle_id", "contact_id"])
    )
    counts = dict(
        session.execute(
            select(type_coerce(CycleItem.channel, String), func.count())
            .where(CycleItem.cycle_id == cycle_id)
            .group_by(CycleItem.channel)
        ).all()
    )
    skipped = dict(
        session.execute(
            select(type_coerce(Contact.status, String), func.count())
            .where(~cycles.reachable())
            .group_by(type_coerce(Contact.status, String))
        ).all()
    )
    cycle.plan = {
        "sms": counts.get("sms", 0),
        "voice": counts.get("voice", 0),
        "skipped": {s.value: skipped.get(s.value, 0) for s in cycles.SKIPPED_STATUSES},
    }
    cycle.state, cycle.planned_at = CycleState.DISPATCHING, now()
    return cycle.plan


# -- SMS ------------------------------------------------------------------------------------------------------


@dataclass(frozen=True, order=True)
class Claimed:
    item_id: int
    contact_id: int
    phone: str
    row_id: int  # the Message or Call written for this attempt


def due_items(session: Session, cycle_id: int, channel: Channel, limit: int) -> list[int]:
    """Lock up to `limit` due items of one channel of a dispatching cycle; rows other dispatchers hold are
    skipped, not awaited. A paused cycle has no due items, so a dispatcher stops at its next batch."""
    dispatching = exists().where(Cycle.id == cycle_id, Cycle.state == CycleState.DISPATCHING)
    due = (
        select(CycleItem.id)
        .where(
            CycleItem.cycle_id == cycle_id,
            CycleItem.channel == channel,
            CycleItem.state == ItemState.PENDING,
            CycleItem.next_attempt_at <= func.now(),
            dispatching,
        )
        .order_by(CycleItem.next_attempt_at, CycleItem.id)
        .limit(limit)
        .with_for_update(skip_locked=True, of=CycleItem)
    )
    return list(session.scalars(due))


def _claimed_values(lease: timedelta) -> dict[str, Any]:
    return {
        "state": ItemState.SUBMITTING,
        "lease_until": now() + lease,
        "attempts": CycleItem.attempts + 1,
        "updated_at": now(),
    }


def claim(session: Session, cycle_id: int, channel: Channel, limit: int) -> list[tuple[int, int, str]]:
    """Take up to `limit` due items of one channel: (item, contact, phone), each claimed once."""
    ids = due_items(session, cycle_id, channel, limit)
    if not ids:
        return []
    lease = timedelta(seconds=get_settings().dispatch_lease)
    session.execute(
        update(CycleItem)
        .where(CycleItem.id.in_(ids))
        .values(**_claimed_values(lease))
        .execution_options(synchronize_session=False)
    )
    return list(
        session.execute(
            select(CycleItem.id, CycleItem.contact_id, Contact.phone)
            .join(Contact, Contact.id == CycleItem.contact_id)
            .where(CycleItem.id.in_(ids))
            .order_by(CycleItem.id)
        ).all()
    )


def claim_sms(cycle: Cycle, limit: int) -> list[Claimed]:
    """Claim a batch and write its Message rows (`submitting`) in one committed transaction.

    Three statements whatever the batch size: lock the due items, one INSERT … SELECT … RETURNING for
    the messages, one UPDATE moving the items to `submitting` with their message ids.
    """
    with session_scope() as session:
        ids = due_items(session, cycle.id, Channel.SMS, limit)
        if not ids:
            return []
        created = now()
        columns = ["contact_id", "cycle_id", "cycle_item_id", "phone", "text", "send_state", "created_at"]
        rows = (
            select(
                CycleItem.contact_id,
                literal(cycle.id),
                CycleItem.id,
                Contact.phone,
                literal(cycle.message, type_=_messages.c.text.type),
                literal("submitting", type_=_messages.c.send_state.type),
                literal(created, type_=_messages.c.created_at.type),
            )
            .join(Contact, Contact.id == CycleItem.contact_id)
            .where(CycleItem.id.in_(ids))
            .order_by(CycleItem.id)
        )
        written = session.execute(
            insert(_messages)
            .from_select(columns, rows)
            .returning(_messages.c.cycle_item_id, _messages.c.contact_id, _messages.c.phone, _messages.c.id)
        ).all()
        latest = select(func.max(_messages.c.id)).where(_messages.c.cycle_item_id == CycleItem.id).scalar_subquery()
        lease = timedelta(seconds=get_settings().dispatch_lease)
        session.execute(
            update(CycleItem)
            .where(CycleItem.id.in_(ids))
            .values(message_id=latest, **_claimed_values(lease))
            .execution_options(synchronize_session=False)
        )
        return sorted(Claimed(*row) for row in written)


def dispatch_sms(cycle_id: int, budget_seconds: float = 20.0) -> str:
    """Send the cycle's due SMS in batches until none are due, the cycle pauses or the budget is spent.

    Returns `idle` (nothing due), `more` (budget spent), `paused` or `retry` (AT failing: try later).
    """
    settings = get_settings()
    deadline = time.monotonic() + budget_seconds
    cycle = read_cycle(cycle_id)
    if cycle is None or cycle.state is not CycleState.DISPATCHING:
        return "paused" if cycle and cycle.state is CycleState.PAUSED else "idle"
    while time.monotonic() < deadline:
        # Wait for the rate budget before claiming, so waiting never eats into the claim's lease.
        get_store().acquire_rate("sms", settings.sms_batch_size, settings.send_rate_per_second)
        batch = claim_sms(cycle, settings.sms_batch_size)  # claims nothing once the cycle left `dispatching`
        if not batch:
            latest = read_cycle(cycle_id)
            return "paused" if latest and latest.state is CycleState.PAUSED else "idle"
        outcome = send_sms_batch(cycle, batch, settings)
        if outcome != "sent":
            return outcome
    return "more"


def read_cycle(cycle_id: int) -> Cycle | None:
    with session_scope() as session:
        cycle = session.get(Cycle, cycle_id)
        if cycle is not None:
            session.expunge(cycle)
        return cycle


def send_sms_batch(cycle: Cycle, batch: list[Claimed], settings: Settings) -> str:
    try:
        result = get_at_client().send_sms(cycle.message, [c.phone for c in batch])
    except AtTransient as exc:
        if maybe_sent(exc):
            log.warning("cycle %s: AT did not answer in time; %d sends wait for reconciliation", cycle.id, len(batch))
            return "retry"
        with session_scope() as session:
            retry_later(session, batch, Message, str(exc), settings.send_attempts)
        return "retry"
    except AtRejected as exc:
        with session_scope() as session:
            cycles.pause(session, cycle.id, f"AT refused the request: {exc}")
            give_back(session, batch, Message, str(exc))
        return "paused"
    with session_scope() as session:
        return record_sms_batch(session, cycle.id, batch, result)


def record_sms_batch(session: Session, cycle_id: int, batch: list[Claimed], result: SmsSendResult) -> str:
    """Record AT's whole answer for a batch in a few set-based statements (`outcomes.record_sends`, then
    one UPDATE per item outcome present), and apply delivery reports that arrived before it."""
    if not result.recipients:
        # A request-level refusal (e.g. InvalidSenderId): every message would fail the same way.
        cycles.pause(session, cycle_id, f"AT refused the whole request: {result.summary}")
        give_back(session, batch, Message, result.summary)
        return "paused"
    by_number = {r.number: r for r in result.recipients}
    listed = [(c, by_number[c.phone]) for c in batch if c.phone in by_number]
    unlisted = [c for c in batch if c.phone not in by_number]
    rules = outcomes.record_sends(session, [outcomes.Send(c.row_id, c.contact_id, r) for c, r in listed])
    sent: list[Claimed] = []
    failed: dict[str, list[Claimed]] = defaultdict(list)
    paused: dict[str, list[Claimed]] = defaultdict(list)
    retried: dict[str, list[Claimed]] = defaultdict(list)
    accepted: list[str] = []
    pause_reason = None
    for (claimed, recipient), rule in zip(listed, rules, strict=True):
        if rule.action is Action.ACCEPTED:
            sent.append(claimed)
            accepted.extend([recipient.message_id] if recipient.message_id else [])
        elif rule.action is Action.PAUSE:
            pause_reason = pause_reason or f"{recipient.status} ({recipient.status_code}): {rule.why}"
            paused[recipient.status].append(claimed)
        elif rule.action is Action.RETRY:
            retried[f"{recipient.status} ({recipient.status_code})"].append(claimed)
        else:
            failed[outcomes.send_error(recipient, rule)].append(claimed)
    if unlisted:
        why = "AT's answer did not list this number"
        session.execute(
            update(_messages)
            .where(_messages.c.id.in_([c.row_id for c in unlisted]))
            .values(send_state="failed", send_error=why)
        )
        failed[why].extend(unlisted)
    finish_items(session, sent, ItemState.SENT)
    for error, claims in failed.items():
        finish_items(session, claims, ItemState.FAILED, error)
    if pause_reason is not None:
        cycles.pause(session, cycle_id, pause_reason)
    for status, claims in paused.items():
        give_back(session, claims, Message, status)
    for why, claims in retried.items():
        retry_later(session, claims, Message, why, get_settings().send_attempts)
    if accepted:
        apply_pending_dlrs(session, accepted)  # reports may have arrived before we recorded the ids
    return "paused" if pause_reason is not None else "sent"


def finish_items(session: Session, batch: Sequence[Claimed], state: ItemState, error: str | None = None) -> None:
    if not batch:
        return
    session.execute(
        update(CycleItem)
        .where(CycleItem.id.in_(sorted(c.item_id for c in batch)))
        .values(state=state, error=error, lease_until=None, updated_at=now())
        .execution_options(synchronize_session=False)
    )


def finish_item(session: Session, claimed: Claimed, state: ItemState, error: str | None = None) -> None:
    finish_items(session, [claimed], state, error)


def give_back(session: Session, batch: Sequence[Claimed], model: type[Message] | type[Call], why: str) -> None:
    """Nothing was sent (the cycle paused): items go back untouched, their attempt not counted."""
    if not batch:
        return
    ids = [c.item_id for c in batch]
    session.execute(
        update(CycleItem)
        .where(CycleItem.id.in_(ids))
        .values(state=ItemState.PENDING, lease_until=None, attempts=CycleItem.attempts - 1, updated_at=now())
        .execution_options(synchronize_session=False)
    )
    session.execute(
        update(model)
        .where(model.id.in_([c.row_id for c in batch]))
        .values(send_state="failed", send_error=f"not sent: {why}")
        .execution_options(synchronize_session=False)
    )


def retry_later(
    session: Session, batch: Sequence[Claimed], model: type[Message] | type[Call], why: str, max_attempts: int
) -> None:
    """A transient AT failure: try again after a backoff, or record the item failed after `max_attempts`.

    One UPDATE per distinct attempt count in the batch (the backoff depends on it), not one per item."""
    if not batch:
        return
    session.execute(
        update(model)
        .where(model.id.in_([c.row_id for c in batch]))
        .values(send_state="failed", send_error=why)
        .execution_options(synchronize_session=False)
    )
    by_id = {c.item_id: c for c in batch}
    attempts_of = session.execute(select(CycleItem.id, CycleItem.attempts).where(CycleItem.id.in_(list(by_id))))
    by_attempts: dict[int, list[int]] = defaultdict(list)
    for item_id, attempts in attempts_of:
        by_attempts[attempts or 0].append(item_id)
    for attempts, item_ids in sorted(by_attempts.items()):
        if attempts >= max_attempts:
            claims = [by_id[i] for i in item_ids]
            finish_items(session, claims, ItemState.FAILED, f"gave up after {attempts} attempts: {why}")
            continue
        session.execute(
            update(CycleItem)
            .where(CycleItem.id.in_(sorted(item_ids)))
            .values(state=ItemState.PENDING, lease_until=None, error=why, next_attempt_at=now() + backoff(attempts))
            .execution_options(synchronize_session=False)
        )


# -- voice ----------------------------------------------------------------------------------------------------


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
    except AtTransient as exc:
        if maybe_sent(exc):
            return "unknown"  # AT may be ringing them: its callbacks will tell (reconcile_interrupted)
        with session_scope() as session:
            retry_later(session, [claimed], Call, str(exc), settings.send_attempts)
        return "retry"
    except AtRejected as exc:
        with session_scope() as session:
            cycles.pause(session, cycle.id, f"AT refused the call request: {exc}")
            give_back(session, [claimed], Call, str(exc))
        return "paused"
    entry = next(iter(result.entries), None)
    with session_scope() as session:
        return record_call(session, cycle.id, claimed, entry, result.error_message, message)


def record_call(
    session: Session, cycle_id: int, claimed: Claimed, entry: CallEntry | None, error: str | None, message: str
) -> str:
    call = session.get_one(Call, claimed.row_id)
    if entry is not None and entry.session_id:
        get_store().remember_script(message, phone=claimed.phone, session_id=entry.session_id)
        # The final callback may already have adopted this call (ingest._lock_call); keep its session id.
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


# -- completion and recovery ---------------------------------------------------------------------------------


def finish_if_done(session: Session, cycle_id: int) -> bool:
    # Two probes, one per partial index: pending items (ix_cycle_items_due) and claimed or submitting ones
    # (ix_cycle_items_cycle_id_state, which holds only items past pending).
    open_items = session.scalar(
        select(exists().where(CycleItem.cycle_id == cycle_id, CycleItem.state == ItemState.PENDING))
    ) or session.scalar(
        select(
            exists().where(
                CycleItem.cycle_id == cycle_id, CycleItem.state.in_([ItemState.CLAIMED, ItemState.SUBMITTING])
            )
        )
    )
    calls_open = session.scalar(
        select(func.count())
        .select_from(CycleItem)
        .join(Call, Call.id == CycleItem.call_id)
        .where(
            CycleItem.cycle_id == cycle_id,
            CycleItem.state == ItemState.SENT,
            Call.ended_at.is_(None),
            Call.created_at > now() - CALL_STALE,
        )
    )
    if open_items or calls_open:
        return False
    result = session.execute(
        update(Cycle)
        .where(Cycle.id == cycle_id, Cycle.state == CycleState.DISPATCHING)
        .values(state=CycleState.DONE, finished_at=now())
    )
    return result.rowcount == 1


def reconcile_interrupted(session: Session, inbox: CallbackInbox, grace: timedelta) -> dict[str, int]:
    """Items left `submitting` by a dispatcher that died: adopt what AT shows it sent, resend the rest.

    An SMS is adopted when a delivery report for its number arrived after the claim and matches no
    message of ours; a call when its callbacks adopted it (ingest). Anything else is sent again once
    the grace period has passed *and* every queued callback has been applied, so a report still waiting
    in Redis cannot be mistaken for a send that never happened.
    """
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
    inbox_settled = inbox.depth() == 0 and inbox.in_flight() == 0
    for item_id, contact_id, channel, message_id, call_id, lease_until in stale:
        claimed = Claimed(item_id, contact_id, "", message_id or call_id or 0)
        if adopt(session, channel, claimed):
            counts["adopted"] += 1
        elif inbox_settled and lease_until + grace < now():
            model = Message if channel is Channel.SMS else Call
            retry_later(session, [claimed], model, "outcome unknown (dispatcher interrupted); sending again", 10**6)
            counts["resent"] += 1
        else:
            counts["waiting"] += 1
    return counts


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
    outcomes.mark_contact_pending(session, claimed.contact_id, message.id)
    session.flush()
    apply_pending_dlrs(session, [orphan])
    return True


def cycles_to_nudge(session: Session) -> list[tuple[int, bool, bool]]:
    """Dispatching cycles with due SMS or voice items, for housekeeping to restart their dispatchers."""
    rows = session.execute(
        select(CycleItem.cycle_id, type_coerce(CycleItem.channel, String), func.count())
        .join(Cycle, Cycle.id == CycleItem.cycle_id)
        .where(
            Cycle.state == CycleState.DISPATCHING,
            CycleItem.state == ItemState.PENDING,
            CycleItem.next_attempt_at <= func.now(),
        )
        .group_by(CycleItem.cycle_id, CycleItem.channel)
    ).all()
    found: dict[int, tuple[bool, bool]] = {}
    for cycle_id, channel, _n in rows:
        sms, voice = found.get(cycle_id, (False, False))
        found[cycle_id] = (sms or channel == "sms", voice or channel == "voice")
    return [(cycle_id, sms, voice) for cycle_id, (sms, voice) in found.items()]


def stuck_planning(session: Session, older_than: timedelta = timedelta(minutes=2)) -> list[int]:
    return list(
        session.scalars(
            select(Cycle.id).where(Cycle.state == CycleState.PLANNING, Cycle.created_at < now() - older_than)
        )
    )


def open_cycles(session: Session) -> list[int]:
    return list(session.scalars(select(Cycle.id).where(Cycle.state == CycleState.DISPATCHING)))
