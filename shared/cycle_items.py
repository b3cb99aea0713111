"""Which rows of cycle_items are one cycle's: the range of ids its plan recorded, read through the primary key.

Planning inserts a cycle's items in one statement and records the range of their ids on the cycle
(`first_item_id`, `last_item_id`). Every reader of "the cycle's items" says so with `of_cycle`: the cycle's id
and that range, so the primary key gives them in id order, a page at a time, with no index of their own (a
(cycle_id, id) index cost planning 0.55-0.9 s at a million contacts, issue 15). The cycle's own id is still
checked: another cycle's items may fall inside the range (a plan running beside it takes ids meanwhile).
A cycle with no range recorded has no items (never planned, or planned to no one before ranges were recorded:
revision c7e3a9d1f5b2's backfill gave every cycle with items its range), and none is read.
"""

from __future__ import annotations

from sqlalchemy import ColumnElement, and_, bindparam, false
from sqlalchemy.orm import Session

from shared.models import Cycle, CycleItem


def of_cycle(session: Session, cycle_id: int) -> ColumnElement[bool]:
    """SQL: the item is one of this cycle's. The range's bounds are written into the statement, not passed
    as parameters: the planner then knows how many rows they hold. Given as parameters (or read by a
    subquery) it guessed a few thousand, and hashed and sorted a whole million-item cycle for one page of
    its export, 2.9 s where reading it in id order takes milliseconds."""
    cycle = session.get(Cycle, cycle_id)
    if cycle is None or cycle.first_item_id is None or cycle.last_item_id is None:
        return false()  # no item: Postgres answers without reading the table
    first, last = cycle.first_item_id, cycle.last_item_id
    return and_(
        CycleItem.cycle_id == cycle_id,
        CycleItem.id.between(bindparam(None, first, literal_execute=True), bindparam(None, last, literal_execute=True)),
    )
