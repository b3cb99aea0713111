"""A cycle item's state changes shared by every stage: claim, finish, give back, retry later."""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Select, exists, func, select, update
from sqlalchemy.orm import Session

from shared import cycle_control
from shared.cycles import SKIPPED_STATUSES, pending_on
from shared.db import session_scope
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
from shared.settings import get_settings
from worker.cycles import window_holds

log = logging.getLogger(__name__)

#: Why an item planned for a contact who then opted out or proved invalid was never sent.
LEFT_BEFORE_SENDING = "the contact opted out or proved invalid before it was sent"


def now() -> datetime:
    return datetime.now(UTC)


def backoff(attempt: int) -> timedelta:
    """5 s, 10 s, 20 s ... capped at 5 minutes (broker countdowns stay short, celery-reliability §0)."""
    return timedelta(seconds=min(300, 5 * 2 ** max(0, attempt - 1)))


@dataclass(frozen=True, order=True)
class Claimed:
    item_id: int
    contact_id: int
    phone: str
    row_id: int  # the Message or Call written for this attempt
    #: The text rendered for this contact, when the cycle's text has placeholders (shared/placeholders.py).
    text: str | None = field(default=None, compare=False)


def due_items(session: Session, cycle_id: int, channel: Channel, limit: int) -> list[int]:
    """Lock up to `limit` due items of one channel of a dispatching cycle whose send window is open now.
    Items whose window closed since they were planned go back to wait for its next opening (window_holds),
    and the next due ones are looked at instead."""
    for _round in range(window_holds.MAX_HOLD_ROUNDS):
        ids = lock_due(session, cycle_id, channel, limit)
        in_window = window_holds.hold_closed(session, cycle_id, channel, ids, now())
        sendable = cancel_unreachable(session, in_window)
        if sendable or not ids:
            return sendable
    return []


def cancel_unreachable(session: Session, ids: list[int]) -> list[int]:
    """Of these locked items, the ones whose contact may still be sent to; the others are cancelled.

    Consent is checked again here, at the moment of sending, because a plan can miss it: a STOP applied while a
    plan's statement runs does not wait for it (its update takes no lock the plan's FOR KEY SHARE holds off),
    so the STOP's cancellation cannot see the item being written, and the item would go out pending."""
    if not ids:
        return ids
    gone = (
        update(CycleItem)
        .where(
            CycleItem.id.in_(ids),
            exists().where(Contact.id == CycleItem.contact_id, Contact.status.in_(SKIPPED_STATUSES)),
        )
        .values(state=ItemState.CANCELLED, error=LEFT_BEFORE_SENDING, lease_until=None, updated_at=now())
        .returning(CycleItem.id)
        .execution_options(synchronize_session=False)
    )
    cancelled = set(session.scalars(gone))
    if cancelled:
        log.info("%d items cancelled at sending: their contacts opted out or proved invalid", len(cancelled))
    return [item_id for item_id in ids if item_id not in cancelled]


def lock_due(session: Session, cycle_id: int, channel: Channel, limit: int) -> list[int]:
    """Lock up to `limit` due items of one channel of a dispatching cycle; rows other dispatchers hold are
    skipped, not awaited. A paused or cancelled cycle has no due items, so a dispatcher stops at its next
    batch (the state is read in this same statement: shared/cycle_control.py has the race).

    The cycle row is share-locked first (FOR KEY SHARE: dispatchers do not wait for each other), the lock the
    batch's messages and calls take anyway through their foreign key to the cycle. Taken after the items, it
    made a deadlock with the operator's cancel or pause, which locks the cycle and then the items."""
    if session.scalar(_dispatching_cycle(cycle_id)) is None:
        return []
    return list(session.scalars(due_statement(cycle_id, channel, limit)))


def _dispatching_cycle(cycle_id: int) -> Select[tuple[int]]:
    return (
        select(Cycle.id)
        .where(Cycle.id == cycle_id, Cycle.state == CycleState.DISPATCHING)
        .with_for_update(key_share=True)
    )


def due_statement(cycle_id: int, channel: Channel, limit: int) -> Select[tuple[int]]:
    """The claim's SELECT. Its ORDER BY is the channel's ix_cycle_items_due_* key after the cycle, so it reads the
    first `limit` entries of that index and stops: with an order the index did not give, each batch read and
    sorted every due item of the cycle (630,000 at a million contacts, 0.8 s a batch)."""
    dispatching = exists().where(Cycle.id == cycle_id, Cycle.state == CycleState.DISPATCHING)
    return (
        select(CycleItem.id)
        .where(
            CycleItem.cycle_id == cycle_id,
            pending_on(channel),
            CycleItem.next_attempt_at <= func.now(),
            dispatching,
        )
        .order_by(CycleItem.next_attempt_at, CycleItem.id)
        .limit(limit)
        .with_for_update(skip_locked=True, of=CycleItem)
    )


def claimed_values(lease: timedelta) -> dict[str, Any]:
    return {
        "state": ItemState.SUBMITTING,
        "waiting_for_window": False,
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
        .values(**claimed_values(lease))
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


def read_cycle(cycle_id: int) -> Cycle | None:
    with session_scope() as session:
        cycle = session.get(Cycle, cycle_id)
        if cycle is not None:
            session.expunge(cycle)
        return cycle


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


def halted(cycle: Cycle | None) -> str:
    """What a dispatcher says when its cycle is not `dispatching`: `paused`, `cancelled` or `idle`."""
    if cycle is not None and cycle.state in (CycleState.PAUSED, CycleState.CANCELLED):
        return cycle.state.value
    return "idle"


def give_back(session: Session, batch: Sequence[Claimed], model: type[Message] | type[Call], why: str) -> None:
    """Nothing was sent (the cycle paused): items go back untouched, their attempt not counted; in a cycle
    cancelled meanwhile they are cancelled instead."""
    if not batch:
        return
    ids = [c.item_id for c in batch]
    session.execute(
        update(CycleItem)
        .where(CycleItem.id.in_(ids))
        .values(state=ItemState.PENDING, lease_until=None, attempts=CycleItem.attempts - 1, updated_at=now())
        .execution_options(synchronize_session=False)
    )
    cycle_control.cancel_returned(session, ids)
    session.execute(
        update(model)
        .where(model.id.in_([c.row_id for c in batch]))
        .values(send_state="failed", send_error=f"not sent: {why}")
        .execution_options(synchronize_session=False)
    )


def retry_later(
    session: Session, batch: Sequence[Claimed], model: type[Message] | type[Call], why: str, max_attempts: int
) -> None:
    """A transient AT failure: try again after a backoff, or record the item failed after `max_attempts`;
    in a cycle cancelled meanwhile, cancelled instead of tried again.

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
        cycle_control.cancel_returned(session, item_ids)
