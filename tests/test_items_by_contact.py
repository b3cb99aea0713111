"""A contact's cycle items, found cycle by cycle (shared/cycle_items.py `of_contacts`): the unique key of
cycle_items is (cycle_id, contact_id), so that a plan appends to it (issue 15), and what a contact's STOP,
erasure, deletion or delivery report does to its items reaches them through that key in each cycle.

Before, the key led with the contact, and a delivery report read every item the contact ever had, in every
cycle already finished, to find the one call it may cancel: the drain's work per report grew with the cycles
run."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import pytest
from sqlalchemy import Engine, delete, insert, select, text
from sqlalchemy.orm import Session

from shared import consent, cycle_items
from shared.callbacks import Dlr
from shared.erasure import erase_contact
from shared.models import Channel, Contact, ContactStatus, Cycle, CycleItem, CycleState, ItemState, Message
from shared.store import SqlStore
from tests.cycle_support import items_read, record_items_range
from worker import ingest

PHONE, OTHER = "+254711000061", "+254711000062"
FINISHED_CYCLES = 40


def _cycle_with_items(session: Session, state: CycleState, items: list[tuple[int, Channel, ItemState]]) -> int:
    cycle = Cycle(message="Hello", state=state)
    session.add(cycle)
    session.flush()
    rows = [{"cycle_id": cycle.id, "contact_id": c, "channel": ch, "state": st} for c, ch, st in items]
    session.execute(insert(CycleItem), rows)
    record_items_range(session, cycle.id)
    return cycle.id


def test_a_delivery_report_reads_no_item_of_a_finished_cycle(session: Session) -> None:
    """A `Success` cancels the contact's calls not yet placed (worker/ingest/dlr.py): only a cycle that may still
    send holds such a call. The contact's items in forty finished cycles are not read; before, all forty were.
    (Postgres' planner reads a few rows itself, at the ends of an index, to estimate: hence not an exact count.)"""
    contact = Contact(phone=PHONE, status=ContactStatus.PENDING)
    session.add(contact)
    session.flush()
    for _ in range(FINISHED_CYCLES):
        _cycle_with_items(session, CycleState.DONE, [(contact.id, Channel.VOICE, ItemState.DONE)])
    # A live cycle, with its calls to others (no contact rows needed: an item's contact has no foreign key), enough
    # of them that reading the whole table is not what Postgres would choose anyway.
    calls = [(contact.id, Channel.VOICE, ItemState.PENDING)]
    calls += [(10_000 + n, Channel.VOICE, ItemState.PENDING) for n in range(5_000)]
    open_cycle = _cycle_with_items(session, CycleState.DISPATCHING, calls)
    message = Message(contact_id=contact.id, phone=PHONE, text="earlier", at_message_id="ATXid_" + "7" * 32)
    session.add(message)
    session.flush()
    contact.last_message_id = message.id
    session.commit()
    session.execute(text("ANALYZE cycle_items"))
    session.execute(text("ANALYZE cycles"))
    session.commit()

    before = items_read(session)
    report = Dlr(id=message.at_message_id, status="Success", phone_number=PHONE)
    ingest.apply_dlrs(session, [(datetime.now(UTC), report)])
    read = items_read(session) - before
    session.commit()

    call = session.scalars(
        select(CycleItem).where(CycleItem.cycle_id == open_cycle, CycleItem.contact_id == contact.id)
    ).one()
    assert call.state is ItemState.CANCELLED
    assert read < 10, read


def test_a_contacts_items_are_looked_up_through_the_unique_key_in_each_cycle(session: Session) -> None:
    """No lookup of a contact's items reads the whole table: the unique (cycle_id, contact_id), cycle by cycle
    (sequential scans are priced out, so a statement that has no index to use shows one)."""
    contact = Contact(phone=PHONE, status=ContactStatus.ACTIVE)
    session.add(contact)
    session.flush()
    _cycle_with_items(session, CycleState.DISPATCHING, [(contact.id, Channel.SMS, ItemState.PENDING)])
    session.commit()
    session.execute(text("SET LOCAL enable_seqscan = off"))
    lookups = {
        "all": select(CycleItem.id).where(cycle_items.of_contacts(session, [contact.id])),
        "pending": select(CycleItem.id).where(cycle_items.pending_of_contacts(session, [contact.id])),
    }
    cursor = session.connection().connection.driver_connection.cursor()
    for name, statement in lookups.items():
        compiled = statement.compile(session.get_bind(), compile_kwargs={"render_postcompile": True})
        cursor.execute(f"EXPLAIN {compiled}", compiled.params)
        plan = "\n".join(row[0] for row in cursor.fetchall())
        assert "Seq Scan on cycle_items" not in plan, (name, plan)
        assert "uq_cycle_items_cycle_id_contact_id" in plan, (name, plan)


@dataclass(frozen=True)
class ThreeCycles:
    contact: int
    other: int
    cycles: dict[str, int]  # by state: dispatching, paused, done


@pytest.fixture
def three(dialect_engine: Engine) -> ThreeCycles:
    """A contact with a pending SMS in a dispatching cycle, a pending call in a paused one and a sent SMS in a
    finished one; another contact with items in two cycles."""
    with Session(dialect_engine) as session:
        contact, other = Contact(phone=PHONE, status=ContactStatus.ACTIVE), Contact(phone=OTHER)
        session.add_all([contact, other])
        session.flush()
        cycles = {
            "dispatching": _cycle_with_items(
                session,
                CycleState.DISPATCHING,
                [(contact.id, Channel.SMS, ItemState.PENDING), (other.id, Channel.SMS, ItemState.PENDING)],
            ),
            "paused": _cycle_with_items(session, CycleState.PAUSED, [(contact.id, Channel.VOICE, ItemState.PENDING)]),
            "done": _cycle_with_items(
                session,
                CycleState.DONE,
                [(contact.id, Channel.SMS, ItemState.SENT), (other.id, Channel.SMS, ItemState.SENT)],
            ),
        }
        session.commit()
        return ThreeCycles(contact.id, other.id, cycles)


def _items(engine: Engine) -> dict[tuple[int, int | None], ItemState]:
    with Session(engine) as session:
        rows = session.execute(select(CycleItem.cycle_id, CycleItem.contact_id, CycleItem.state))
        return {(cycle_id, contact_id): state for cycle_id, contact_id, state in rows}


def test_an_opt_out_cancels_the_contacts_pending_items_in_every_cycle_that_may_send(
    dialect_engine: Engine, three: ThreeCycles
) -> None:
    contact, other, cycles = three.contact, three.other, three.cycles
    with Session(dialect_engine) as session, session.begin():
        assert consent.cancel_pending(session, [contact], "opted out (test)") == 2
    assert _items(dialect_engine) == {
        (cycles["dispatching"], contact): ItemState.CANCELLED,
        (cycles["paused"], contact): ItemState.CANCELLED,
        (cycles["done"], contact): ItemState.SENT,
        (cycles["dispatching"], other): ItemState.PENDING,
        (cycles["done"], other): ItemState.SENT,
    }


def test_erasure_and_deletion_reach_the_contacts_items_in_every_cycle(
    dialect_engine: Engine, three: ThreeCycles
) -> None:
    other, cycles = three.other, three.cycles
    with Session(dialect_engine) as session, session.begin():
        assert erase_contact(session, SqlStore(dialect_engine), PHONE) is True
    # The erased contact's items stay, without it: they count in their cycles' reports.
    assert _items(dialect_engine) == {
        (cycles["dispatching"], None): ItemState.CANCELLED,
        (cycles["paused"], None): ItemState.CANCELLED,
        (cycles["done"], None): ItemState.SENT,
        (cycles["dispatching"], other): ItemState.PENDING,
        (cycles["done"], other): ItemState.SENT,
    }
    with Session(dialect_engine) as session, session.begin():
        session.execute(delete(Contact).where(Contact.id == other))
    assert set(_items(dialect_engine)) == {(cycles[name], None) for name in ("dispatching", "paused", "done")}
