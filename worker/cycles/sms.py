"""SMS dispatch: claim a batch, send it in one AT request, record AT's whole answer in a few statements."""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from datetime import datetime, timedelta

from sqlalchemy import func, insert, literal, select, update
from sqlalchemy.orm import Session

from shared import alerts, cycles, placeholders, ratelimit, sender_rules
from shared.at_client import AtError, AtRejected, SmsRecipient, SmsSendResult, get_at_client, maybe_sent
from shared.db import session_scope
from shared.models import (
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
from shared.store import get_store
from worker import fallback, outcomes
from worker.cycles import dnd
from worker.cycles.items import (
    Claimed,
    claimed_values,
    due_items,
    finish_items,
    give_back,
    halted,
    now,
    read_cycle,
    retry_later,
)
from worker.ingest import apply_pending_dlrs

log = logging.getLogger(__name__)

_messages = Message.__table__


def claim_sms(cycle: Cycle, limit: int) -> list[Claimed]:
    """Claim a batch and write its Message rows (`submitting`) in one committed transaction.

    Three statements whatever the batch size: lock the due items, write the messages, one UPDATE moving
    the items to `submitting` with their message ids. A text without placeholders is written by one
    INSERT … SELECT; one with them, or one that a promotional sender id's opt-out follows to some numbers
    (shared/sender_rules.py), is rendered per contact (`_write_rendered`: one SELECT more).
    """
    settings = get_settings()
    with session_scope() as session:
        ids = due_items(session, cycle.id, Channel.SMS, limit)
        if not ids:
            return []
        if placeholders.is_personal(cycle.message) or sender_rules.applies(settings.at_sender_kind):
            claimed = _write_rendered(session, cycle, ids, now())
        else:
            claimed = _write_same_text(session, cycle, ids, now())
        latest = select(func.max(_messages.c.id)).where(_messages.c.cycle_item_id == CycleItem.id).scalar_subquery()
        lease = timedelta(seconds=get_settings().dispatch_lease)
        session.execute(
            update(CycleItem)
            .where(CycleItem.id.in_(ids))
            .values(message_id=latest, **claimed_values(lease))
            .execution_options(synchronize_session=False)
        )
        return sorted(claimed)


def _write_same_text(session: Session, cycle: Cycle, ids: list[int], created: datetime) -> list[Claimed]:
    columns = ["contact_id", "cycle_id", "cycle_item_id", "phone", "text", "send_state", "created_at"]
    rows = (
        select(
            CycleItem.contact_id,
            literal(cycle.id),
            CycleItem.id,
            Contact.phone,
            literal(placeholders.render(cycle.message), type_=_messages.c.text.type),
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
    return [Claimed(*row) for row in written]


def _write_rendered(session: Session, cycle: Cycle, ids: list[int], created: datetime) -> list[Claimed]:
    """The cycle's text filled in for each contact: one SELECT of the contacts, one INSERT of the messages."""
    contacts = session.execute(
        select(CycleItem.id, CycleItem.contact_id, Contact.phone, Contact.name)
        .join(Contact, Contact.id == CycleItem.contact_id)
        .where(CycleItem.id.in_(ids))
        .order_by(CycleItem.id)
    ).all()
    texts = {item: text_for(cycle.message, name, phone) for item, _c, phone, name in contacts}
    values = [
        {
            "contact_id": contact_id,
            "cycle_id": cycle.id,
            "cycle_item_id": item_id,
            "phone": phone,
            "text": texts[item_id],
            "send_state": "submitting",
            "created_at": created,
        }
        for item_id, contact_id, phone, _name in contacts
    ]
    written = session.execute(insert(_messages).returning(_messages.c.cycle_item_id, _messages.c.id), values).all()
    message_of = dict(written)
    return [Claimed(i, c, p, message_of[i], texts[i]) for i, c, p, _n in contacts]


def text_for(message: str, name: str | None, phone: str) -> str:
    """The SMS one contact gets: the cycle's text filled in, and the opt-out a promotional sender id's SMS to
    their country must carry (shared/sender_rules.py), counted in the bill too (shared/cycle_money.py)."""
    settings = get_settings()
    suffix = sender_rules.opt_out_suffix(phone, settings.at_sender_kind, settings.promotional_opt_out_text)
    return placeholders.render(message, name=name, phone=phone) + suffix


def dispatch_sms(cycle_id: int, budget_seconds: float = 20.0) -> str:
    """Send the cycle's due SMS in batches until none are due, the cycle pauses or is cancelled, or the budget
    is spent.

    Returns `idle` (nothing due), `more` (budget spent), `paused`, `cancelled` or `retry` (AT failing: try later).
    """
    settings = get_settings()
    deadline = time.monotonic() + budget_seconds
    cycle = read_cycle(cycle_id)
    if cycle is None or cycle.state is not CycleState.DISPATCHING:
        return halted(cycle)
    # A batch goes whole in one request, so none may carry more than a second's budget (issue 13).
    size = ratelimit.batch_limit(settings.sms_batch_size, settings.send_rate_per_second)
    while time.monotonic() < deadline:
        # Wait for the batch's turn before claiming, so waiting never eats into the claim's lease.
        get_store().acquire_rate("sms", size, settings.send_rate_per_second)
        batch = claim_sms(cycle, size)  # claims nothing once the cycle left `dispatching`
        if not batch:
            return halted(read_cycle(cycle_id))
        outcome = send_sms_batch(cycle, batch, settings)
        if outcome != "sent":
            return outcome
    return "more"


def send_sms_batch(cycle: Cycle, batch: list[Claimed], settings: Settings) -> str:
    """One AT request per distinct text in the batch (one in all for a text without placeholders); when a
    request does not end `sent`, the rest of the batch goes back unsent."""
    groups = by_text(cycle, batch)
    for position, (text, claims) in enumerate(groups):
        outcome = send_same_text(cycle, text, claims, settings)
        if outcome != "sent":
            rest = [claimed for _text, later in groups[position + 1 :] for claimed in later]
            if rest:
                with session_scope() as session:
                    give_back(session, rest, Message, f"an earlier request of its batch ended {outcome}")
            return outcome
    return "sent"


def by_text(cycle: Cycle, batch: list[Claimed]) -> list[tuple[str, list[Claimed]]]:
    """The batch grouped by the text each contact gets, in claim order."""
    same = placeholders.render(cycle.message)
    groups: dict[str, list[Claimed]] = {}
    for claimed in batch:
        groups.setdefault(claimed.text if claimed.text is not None else same, []).append(claimed)
    return list(groups.items())


def send_same_text(cycle: Cycle, text: str, batch: list[Claimed], settings: Settings) -> str:
    try:
        result = get_at_client().send_sms(text, [c.phone for c in batch])
    except AtError as exc:
        return unanswered_batch(cycle, batch, exc, settings)
    with session_scope() as session:
        return record_sms_batch(session, cycle.id, batch, result)


def unanswered_batch(cycle: Cycle, batch: list[Claimed], exc: AtError, settings: Settings) -> str:
    """No answer of AT's to record. Maybe sent: the items stay `submitting`, for `reconcile_interrupted`
    to adopt from AT's delivery reports (or send again once, when none come); never sent again now.
    Known not sent: retried after a backoff (transient) or given back with the cycle paused."""
    with session_scope() as session:
        if maybe_sent(exc):
            log.warning("cycle %s: %d sends wait for AT's callbacks: %s", cycle.id, len(batch), exc)
            note_unanswered(session, batch, exc)
            return "retry"
        if not isinstance(exc, AtRejected):
            retry_later(session, batch, Message, str(exc), settings.send_attempts)
            return "retry"
        cycles.pause(session, cycle.id, f"AT refused the request: {exc}")
        alerts.on_at_refusal(session, exc)
        give_back(session, batch, Message, str(exc))
    return "paused"


def note_unanswered(session: Session, batch: list[Claimed], exc: AtError) -> None:
    """Say on each message why it is still `submitting` (the item keeps its state and lease)."""
    why = f"AT may have acted ({exc}): waiting for its callbacks before sending again"
    session.execute(update(_messages).where(_messages.c.id.in_([c.row_id for c in batch])).values(send_error=why))


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
    refused_for_now: list[tuple[Claimed, SmsRecipient]] = []
    call_instead: list[int] = []  # refused where a call may get through (same-cycle fallback)
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
        elif rule.action is Action.WAIT_FOR_WINDOW:
            refused_for_now.append((claimed, recipient))
        else:
            failed[outcomes.send_error(recipient, rule)].append(claimed)
            call_instead.extend([claimed.item_id] if rule.action is Action.UNDELIVERED else [])
    if unlisted:
        why = "AT's answer did not list this number"
        session.execute(
            update(_messages)
            .where(_messages.c.id.in_([c.row_id for c in unlisted]))
            .values(send_state="failed", send_error=why)
        )
        failed[why].extend(unlisted)
    finish_items(session, sent, ItemState.SENT)
    fallback.await_reports(session, [c.item_id for c in sent])  # before the early reports below are applied
    for error, claims in failed.items():
        finish_items(session, claims, ItemState.FAILED, error)
    call_instead.extend(dnd.wait_for_window(session, cycle_id, refused_for_now))
    fallback.call_instead(session, call_instead)
    if pause_reason is not None:
        cycles.pause(session, cycle_id, pause_reason)
    for status, claims in paused.items():
        give_back(session, claims, Message, status)
    for why, claims in retried.items():
        retry_later(session, claims, Message, why, get_settings().send_attempts)
    if accepted:
        apply_pending_dlrs(session, accepted)  # reports may have arrived before we recorded the ids
    return "paused" if pause_reason is not None else "sent"
