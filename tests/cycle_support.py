"""Helpers for tests that plan a cycle in-process and follow its items through the send windows
(tests/test_send_windows.py, tests/test_sender_rules.py)."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, insert, select, text, update

from shared import cycles as shared_cycles
from shared.models import Contact, Cycle, CycleItem, ItemState
from worker import cycles


def plan_new_cycle(session: Any, contacts: list[dict[str, Any]], message: str, **windows: str) -> int:
    """Insert `contacts` (rows of `contacts` columns), start a cycle of `message` and plan it; its id."""
    session.execute(insert(Contact), contacts)
    cycle_id = shared_cycles.start_cycle(session, message, **windows)
    cycles.plan_cycle(session, cycle_id)
    session.commit()
    return cycle_id


def item_windows(session: Any, cycle_id: int) -> list[tuple[ItemState, bool, datetime]]:
    """Each item's state, whether it waits for its window, and when it is due, in plan order."""
    session.expire_all()
    rows = session.execute(
        select(CycleItem.state, CycleItem.waiting_for_window, CycleItem.next_attempt_at)
        .where(CycleItem.cycle_id == cycle_id)
        .order_by(CycleItem.id)
    )
    return [(state, waiting, due) for state, waiting, due in rows]


def make_items_due(session: Any, cycle_id: int) -> None:
    """The cycle's items are due now by the database's clock (their window's opening has been reached)."""
    session.execute(
        update(CycleItem)
        .where(CycleItem.cycle_id == cycle_id)
        .values(next_attempt_at=func.now() - timedelta(seconds=1))
    )
    session.commit()


def record_items_range(session: Any, cycle_id: int) -> None:
    """Record the range of a cycle's item ids, as planning does with the items it inserts (shared/cycle_items.py),
    for a test that adds a cycle's items by hand: a cycle with no range recorded has no items to its readers."""
    session.flush()
    first, last = session.execute(
        select(func.min(CycleItem.id), func.max(CycleItem.id)).where(CycleItem.cycle_id == cycle_id)
    ).one()
    cycle = session.get(Cycle, cycle_id)
    cycle.first_item_id, cycle.last_item_id = first, last


def items_read(session: Any) -> int:
    """Rows of cycle_items read so far by this transaction (Postgres' own count, seq and index scans alike)."""
    return session.scalar(
        text(
            "SELECT coalesce(seq_tup_read, 0) + coalesce(idx_tup_fetch, 0) FROM pg_stat_xact_user_tables"
            " WHERE relname = 'cycle_items'"
        )
    )
