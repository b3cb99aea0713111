"""Planning and erasure, one after the other (Postgres): what a foreign key on `cycle_items.contact_id` did.

A plan must never write an item for a contact an erasure has deleted, and an erasure must see (and cancel)
every item a plan wrote for its contact. Planning used to lock each contact it read FOR KEY SHARE for that;
at a million contacts those locks were 150 MB of WAL and half a second (issue 15). One transaction-scoped
advisory lock does the same for all of them: planning holds it shared, an erasure exclusive, each taking
it before any other lock, so a plan waits for an erasure under way (then reads the contact gone) and an
erasure waits for a plan under way (then cancels its new item). SQLite runs one writer at a time anyway.
"""

from __future__ import annotations

from sqlalchemy import func, literal, select
from sqlalchemy.orm import Session

#: The advisory lock's key ("reach" and 0x01; worker/cycles/calls.py uses "reach" alone).
KEY = 0x7265616368_01


def plan_holds_off_erasures(session: Session) -> None:
    """Planning, first thing in its transaction: an erasure under way is waited for, new ones wait."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(select(func.pg_advisory_xact_lock_shared(literal(KEY))))


def erasure_waits_for_plans(session: Session) -> None:
    """An erasure, before it locks the contact: plans under way are waited for, new ones wait for it."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(select(func.pg_advisory_xact_lock(literal(KEY))))
