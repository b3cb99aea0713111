"""Planning a cycle: one item per reachable contact, routed to SMS or voice in one statement."""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy import String, func, literal, select, type_coerce
from sqlalchemy.orm import Session

from shared import cycle_money, cycles, holds
from shared.db import insert_for
from shared.models import (
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

    The contacts it plans are locked FOR KEY SHARE to the end, in the same statement (what the foreign key
    on `contact_id` did row by row, a third of planning): an erasure waits for the plan, then cancels the new
    items (shared/erasure.py); a contact an erasure holds is waited for, then left out once deleted."""
    cycle = session.get(Cycle, cycle_id, with_for_update=True)
    if cycle is None or not _to_plan(cycle):
        return None
    held = holds.hold_back_now(session, ignore_dlr_silence=cycle.ignore_dlr_silence)
    tagged = cycles.in_tags(session, cycle.tags)
    audience = holds.audience(cycles.reachable() & tagged, held)
    columns = ["cycle_id", "contact_id", "channel", "state", "attempts", "next_attempt_at", "updated_at"]
    # Items whose send window is closed are due at its opening (design §4.2).
    due, waiting = window_holds.planned_due(session, cycle, audience, cycles.channel_expr(), now())
    columns.append("waiting_for_window")
    rows = (
        select(
            literal(cycle_id),
            Contact.id,
            cycles.channel_expr(),
            literal(ItemState.PENDING.value),
            literal(0),
            due,
            func.now(),
            waiting,
        )
        .where(audience)
        .with_for_update(read=True, key_share=True, of=Contact)
    )
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
            .where(~cycles.reachable(), tagged)
            .group_by(type_coerce(Contact.status, String))
        ).all()
    )
    skipped.update(holds.count_held(session, cycles.reachable() & tagged, held))
    cycle.plan = {
        "sms": counts.get("sms", 0),
        "voice": counts.get("voice", 0),
        "skipped": {reason: skipped.get(reason, 0) for reason in cycles.skip_reasons(skipped)},
        # SMS parts and estimated cost (shared.cycle_money), counted once here, not at every read.
        **cycle_money.sms_bill(session, cycle.message, cycle_money.planned_sms(cycle_id)).as_plan(),
    }
    if cycle.state is CycleState.PLANNING:
        cycle.state = CycleState.DISPATCHING
    cycle.planned_at = now()
    return cycle.plan


def _to_plan(cycle: Cycle) -> bool:
    return cycle.state is CycleState.PLANNING or (cycle.state is CycleState.PAUSED and cycle.planned_at is None)
