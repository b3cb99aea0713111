"""Planning a cycle: one item per reachable contact, routed to SMS or voice in one statement."""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy import String, func, insert, literal, select, text, type_coerce
from sqlalchemy.orm import Session

from shared import cycle_money, cycles, erasure_guard, holds
from shared.db import is_postgres
from shared.models import (
    Channel,
    Contact,
    Cycle,
    CycleItem,
    CycleState,
    ItemState,
)
from worker.cycles import window_holds
from worker.cycles.items import (
    now,
)

log = logging.getLogger(__name__)


def plan_cycle(session: Session, cycle_id: int) -> dict[str, Any] | None:
    """One item per reachable contact, routed in SQL in one statement; safe to run twice.

    A cycle the operator paused before its plan ran is planned and stays paused (its resume lets it go); a
    cancelled one is never planned. The row lock held to the end makes a cancel or pause that comes meanwhile
    wait for the plan and apply to all of it (shared/cycle_control.py).

    Erasures are held off to the end (what the foreign key on `contact_id` did row by row, then row locks on
    the contacts: shared/erasure_guard.py): an erasure waits for the plan, then cancels the new items
    (shared/erasure.py); an erasure under way is waited for, and its contact is gone when the plan reads."""
    erasure_guard.plan_holds_off_erasures(session)  # before any other lock: the guard's order
    cycle = session.get(Cycle, cycle_id, with_for_update=True)
    if cycle is None or not _to_plan(cycle):
        return None
    held = holds.hold_back_now(session, ignore_dlr_silence=cycle.ignore_dlr_silence)
    tagged = cycles.in_tags(session, cycle.tags)
    audience = holds.audience(cycles.reachable() & tagged, held)
    # The SMS bill reads the contacts routed to SMS by the INSERT's rule (as the dry run does), not the new
    # items joined back to them (that join read every earlier cycle's items too), with the number groups the
    # send windows go by (one pass for both when the text has no placeholder). A contact whose status changes
    # before the INSERT is billed by its old one: an estimate, as it would be a moment earlier.
    closed = window_holds.closed_windows(cycle)
    bill, groups = cycle_money.sms_bill_and_groups(
        session,
        cycle.message,
        audience,
        cycles.channel_expr() == Channel.SMS.value,
        window_holds.PLAN_PREFIX_CHARACTERS if closed else None,
    )
    columns = ["cycle_id", "contact_id", "channel", "state", "attempts", "next_attempt_at", "updated_at"]
    # Items whose send window is closed are due at its opening (design §4.2).
    due, waiting = window_holds.planned_due(closed, groups, cycles.channel_expr(), now())
    columns.append("waiting_for_window")
    rows = select(
        literal(cycle_id),
        Contact.id,
        cycles.channel_expr(),
        literal(ItemState.PENDING.value),
        literal(0),
        due,
        func.now(),
        waiting,
    ).where(audience)
    # No ON CONFLICT: a cycle is planned once (its row locked, its state checked above, both changed in this
    # transaction) and the SELECT names each contact once, so no item can exist yet. ON CONFLICT made each
    # row a speculative insert, checked and confirmed: a fifth of the INSERT at a million contacts (issue
    # 15). Should an item exist after all, the unique (cycle_id, contact_id) refuses the plan, loudly.
    insert_items = insert(CycleItem).from_select(columns, rows).execution_options(preserve_rowcount=True)
    below = _id_below_next_items(session)
    planned = session.execute(insert_items).rowcount
    # The range of the new items' ids, what every reader of the cycle's items goes by (shared/cycle_items.py).
    cycle.first_item_id = below + 1
    cycle.last_item_id = session.scalar(select(func.max(CycleItem.id))) if planned else below
    voice = _planned_calls(session, cycle_id)
    skipped = dict(
        session.execute(
            select(type_coerce(Contact.status, String), func.count())
            .where(~cycles.reachable(), tagged)
            .group_by(type_coerce(Contact.status, String))
        ).all()
    )
    skipped.update(holds.count_held(session, cycles.reachable() & tagged, held))
    cycle.plan = {
        "sms": planned - voice,
        "voice": voice,
        "skipped": {reason: skipped.get(reason, 0) for reason in cycles.skip_reasons(skipped)},
        # SMS parts and estimated cost (shared.cycle_money), counted once here, not at every read.
        **bill.as_plan(),
    }
    if cycle.state is CycleState.PLANNING:
        cycle.state = CycleState.DISPATCHING
    cycle.planned_at = now()
    return cycle.plan


def _to_plan(cycle: Cycle) -> bool:
    return cycle.state is CycleState.PLANNING or (cycle.state is CycleState.PAUSED and cycle.planned_at is None)


def _id_below_next_items(session: Session) -> int:
    """An id below that of every item this transaction inserts next. On Postgres a value of the ids' own
    sequence: a session's values only grow, whatever other sessions take meanwhile or cache. SQLite writes one
    transaction at a time and gives a new row the largest id plus one."""
    if is_postgres(session):
        return session.scalar(text("SELECT nextval(pg_get_serial_sequence('cycle_items', 'id'))"))
    return session.scalar(select(func.max(CycleItem.id))) or 0


def _planned_calls(session: Session, cycle_id: int) -> int:
    """The plan's voice items, counted through ix_cycle_items_due_voice (all are pending until the plan commits);
    the SMS are the rest of the INSERT's rows. Counting both by channel read every new item: the SMS are most."""
    return session.scalar(
        select(func.count()).where(
            CycleItem.cycle_id == cycle_id,
            cycles.pending_on(Channel.VOICE),
        )
    )
