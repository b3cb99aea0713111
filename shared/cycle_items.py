"""Which rows of cycle_items are one cycle's: the range of ids its plan recorded, read through the primary key.

Planning inserts a cycle's items in one statement and records the range of their ids on the cycle
(`first_item_id`, `last_item_id`). Every reader of "the cycle's items" says so with `of_cycle`: the cycle's id
and that range, so the primary key gives them in id order, a page at a time, with no index of their own (a
(cycle_id, id) index cost planning 0.55-0.9 s at a million contacts, issue 15). The cycle's own id is still
checked: another cycle's items may fall inside the range (a plan running beside it takes ids meanwhile).
A cycle with no range recorded has no items (never planned, or planned to no one before ranges were recorded:
revision c7e3a9d1f5b2's backfill gave every cycle with items its range), and none is read.

A contact's items are found cycle by cycle (`of_contacts`): the unique key is (cycle_id, contact_id), so that a
plan appends its entries at the index's end. Led by the contact, it took each new entry among that contact's
earlier ones, in every leaf of an index that grows with every cycle run, and a delivery report read every
item its contact ever had to find the one call it may cancel (issue 15, revision f4b7d2e9a6c3).
"""

from __future__ import annotations

from collections.abc import Collection

from sqlalchemy import ColumnElement, and_, bindparam, false, select
from sqlalchemy.orm import Session

from shared.db import ids_in
from shared.models import Cycle, CycleItem, CycleState, ItemState

#: The cycles that may hold pending items: a finished cycle has none left (it finishes when none is; a cancel
#: cancels them), a skipped one never had any. Dispatchers claim only in a `dispatching` one.
MAY_SEND = (CycleState.PLANNING, CycleState.DISPATCHING, CycleState.PAUSED)


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
        # Checked on each row of the range, never searched by: `+ 0` keeps the unique (cycle_id, contact_id) out of
        # the planner's choice. Through it, a page of a million-item cycle meant reading all its entries and
        # sorting them by id; the planner may well take that path while its statistics predate the plan.
        CycleItem.cycle_id + 0 == cycle_id,
        CycleItem.id.between(bindparam(None, first, literal_execute=True), bindparam(None, last, literal_execute=True)),
    )


def of_contacts(session: Session, contact_ids: Collection[int]) -> ColumnElement[bool]:
    """SQL: the item is one of these contacts', in any cycle: one probe of the unique key per cycle and contact
    (an erasure, a contact's deletion: a few thousand probes where there are as many cycles)."""
    return CycleItem.cycle_id.in_(select(Cycle.id)) & ids_in(session, CycleItem.contact_id, contact_ids)


def in_cycles_that_may_send_sql() -> str:
    """`pending_of_contacts`'s cycles, as SQL text for a hand-written statement (worker/ingest/dlr.py)."""
    states = ", ".join(f"'{state.value}'" for state in MAY_SEND)
    return f"cycle_id IN (SELECT id FROM cycles WHERE state IN ({states}))"


def pending_of_contacts(session: Session, contact_ids: Collection[int]) -> ColumnElement[bool]:
    """SQL: the item is one of these contacts' and still pending: probed only in the cycles that may still send
    (a handful), whatever the number of cycles run before."""
    may_send = select(Cycle.id).where(Cycle.state.in_(MAY_SEND))
    return (
        CycleItem.cycle_id.in_(may_send)
        & ids_in(session, CycleItem.contact_id, contact_ids)
        & (CycleItem.state == ItemState.PENDING)
    )
