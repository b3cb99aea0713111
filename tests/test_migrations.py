"""The migrations against the models, on both databases Reach runs on, and what the schema itself enforces
for cycle items (revision b5d2f0c7e913 replaced a foreign key by a trigger and narrowed an index)."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from contextlib import nullcontext
from pathlib import Path

import pytest
from alembic import command
from sqlalchemy import Engine, delete, func, select, text, update
from sqlalchemy.orm import Session

from shared import cycle_export, cycle_failures, cycle_report, migrate
from shared.db import build_engine
from shared.models import Channel, Contact, ContactStatus, Cycle, CycleItem, CycleState, ItemState
from tests.services import fresh_database
from worker import cycles
from worker.cycles.items import due_statement
from worker.cycles.recovery import finish_statement, nudge_statement

BEFORE_LIGHTER_PLANNING = "e7b3c1d4a5f6"
BEFORE_RANGES = "b2d6f9a3c8e1"


@pytest.fixture(params=["sqlite", "postgres"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'reach.sqlite3'}"
        return
    base = request.getfixturevalue("database_url")
    with fresh_database(f"{base}_mig_{os.getpid()}", migrated=False) as database_url:
        yield database_url


@pytest.fixture
def engine(url: str) -> Iterator[Engine]:
    migrate.upgrade(url)
    engine = build_engine(url)
    yield engine
    engine.dispose()


def test_upgrade_matches_the_models_and_downgrades_cleanly(url: str) -> None:
    migrate.upgrade(url)
    migrate.check(url)  # raises when models and migrations disagree
    command.downgrade(migrate.alembic_config(url), BEFORE_LIGHTER_PLANNING)
    migrate.upgrade(url)
    migrate.check(url)


def planned_cycle(session: Session, n: int = 3) -> int:
    """A cycle planned over every contact, after adding `n` new ones."""
    start = session.scalar(select(func.count()).select_from(Contact))
    session.add_all(Contact(phone=f"+2547330{start + i:05d}", status=ContactStatus.NEW) for i in range(n))
    cycle = Cycle(message="hello", state=CycleState.PLANNING)
    session.add(cycle)
    session.flush()
    cycles.plan_cycle(session, cycle.id)
    session.commit()
    return cycle.id


def items_of(session: Session, cycle_id: int) -> int:
    return session.scalar(select(func.count()).select_from(CycleItem).where(CycleItem.cycle_id == cycle_id))


def test_deleting_a_cycle_still_deletes_its_items(engine: Engine) -> None:
    with Session(engine) as session:
        kept, gone = planned_cycle(session), planned_cycle(session)
        assert items_of(session, gone) == 6
        session.execute(delete(Cycle).where(Cycle.id == gone))
        session.commit()
        assert items_of(session, gone) == 0
        assert items_of(session, kept) == 3


def test_a_plan_records_its_items_range_and_their_readers_keep_to_the_cycle(engine: Engine) -> None:
    """A cycle's items are read over the range of ids its plan recorded, and by the cycle's id: another
    cycle's items inside that range (a plan running beside it takes ids meanwhile) are not counted as its own
    by the report, the failures page or the export (shared/cycle_items.py)."""
    with Session(engine) as session:
        first, second = planned_cycle(session), planned_cycle(session)
        one, two = session.get_one(Cycle, first), session.get_one(Cycle, second)
        ids = session.scalars(select(CycleItem.id).where(CycleItem.cycle_id == first)).all()
        assert one.first_item_id <= min(ids) and max(ids) <= one.last_item_id < two.first_item_id
        one.last_item_id = two.last_item_id  # as if the second plan had taken ids among the first's
        session.commit()
        assert cycle_report.report(session, first)["sms"] == 3
        assert len(cycle_failures.failures_page(session, first).rows) == 3
        exported = "".join(cycle_export.results_csv(lambda: nullcontext(session), first)).splitlines()
        assert len(exported) == 1 + 3  # the header, and its own three contacts


def test_cycles_planned_before_ranges_get_theirs_and_the_rest_none(url: str, engine: Engine) -> None:
    """Upgraded from before ranges were recorded (c7e3a9d1f5b2), each cycle with items gets the range of
    them and one without items none, which every reader and the delete trigger take for "no item"
    (e5a1c9f3d7b8)."""
    with Session(engine) as session:
        kept, gone = planned_cycle(session), planned_cycle(session)
        session.add(Cycle(message="never planned", state=CycleState.PAUSED))
        session.commit()
    command.downgrade(migrate.alembic_config(url), BEFORE_RANGES)
    migrate.upgrade(url)
    with Session(engine) as session:
        ranges = session.execute(select(Cycle.id, Cycle.first_item_id, Cycle.last_item_id).order_by(Cycle.id)).all()
        spans = session.execute(
            select(CycleItem.cycle_id, func.min(CycleItem.id), func.max(CycleItem.id)).group_by(CycleItem.cycle_id)
        ).all()
        assert ranges == [*sorted(spans), (gone + 1, None, None)]
        assert cycle_report.report(session, kept)["sms"] == 3
        session.execute(delete(Cycle).where(Cycle.id.in_([gone, gone + 1])))
        session.commit()
        assert items_of(session, gone) == 0
        assert items_of(session, kept) == 3


def test_deleting_a_contact_still_deletes_its_items(engine: Engine) -> None:
    with Session(engine) as session:
        cycle_id = planned_cycle(session, n=2)
        gone = session.scalars(select(CycleItem.contact_id).where(CycleItem.cycle_id == cycle_id)).first()
        session.execute(delete(Contact).where(Contact.id == gone))
        session.commit()
        assert items_of(session, cycle_id) == 1


def test_planning_inserts_items_without_a_check_per_row(engine: Engine) -> None:
    """A million-contact plan inserts 900,000 items: a trigger per row (the foreign key on contact_id was
    one) cost a third of planning. The guards are statement-level (worker/cycles/planning.py)."""
    if engine.dialect.name != "postgresql":
        pytest.skip("Postgres catalog")
    per_row = "SELECT tgname FROM pg_trigger WHERE tgrelid = 'cycle_items'::regclass AND tgtype & 1 = 1"
    with engine.connect() as connection:
        assert list(connection.scalars(text(per_row))) == []


MANY_CONTACTS = """
INSERT INTO contacts (phone, name, status, created_at, updated_at)
SELECT '+2547' || lpad(g::text, 8, '0'), 'Customer', CASE WHEN g % 4 = 0 THEN 'inactive' ELSE 'new' END, now(), now()
FROM generate_series(1, :n) AS g
"""

#: The catalog's indexes of cycle_items: (columns, predicate) of each, from pg_index.
INDEXES = """
SELECT (SELECT array_agg(a.attname ORDER BY k.i) FROM unnest(x.indkey) WITH ORDINALITY AS k(attnum, i)
        JOIN pg_attribute a ON a.attrelid = x.indrelid AND a.attnum = k.attnum),
       pg_get_expr(x.indpred, x.indrelid)
FROM pg_index x WHERE x.indrelid = 'cycle_items'::regclass
"""


#: The claim index of each channel: what a freshly planned item of that channel enters besides the plain ones.
CLAIM_INDEXES = {
    f"(((state)::text = 'pending'::text) AND ((channel)::text = '{channel}'::text))": (
        "cycle_id",
        "next_attempt_at",
        "id",
    )
    for channel in ("sms", "voice")
}


def test_a_planned_item_enters_three_indexes_each_at_its_end(engine: Engine) -> None:
    """Every index a freshly planned (pending) item enters costs planning about as much as the row itself: at
    a million contacts each was most of a second (issue 15). Three, and a plan appends to each at its end, so
    its cost does not grow with the cycles run before it: the one-item-per-contact key leads with the cycle (led
    by the contact, it put each new entry among that contact's earlier ones, every leaf of an index that grows
    with every cycle: 1.2x the INSERT's time with three earlier cycles); a cycle's items are a range of the
    primary key recorded on the cycle (shared/cycle_items.py), with no (cycle_id, id) index.

    The claim's index is one per channel, keyed in the claim's order (next_attempt_at, id) after the cycle: a
    plan appends each channel's entries at its index's end. One index with the channel before the order put
    the SMS entries mid-range (1.2 s of CPU at a million contacts); with the channel last, an SMS claim walked
    past every pending voice item due before it, 21 ms a claim against 0.18 ms."""
    if engine.dialect.name != "postgresql":
        pytest.skip("Postgres catalog")
    with engine.connect() as connection:
        indexes = connection.execute(text(INDEXES)).all()
    every_item = {tuple(columns) for columns, where in indexes if where is None}
    assert every_item == {("id",), ("cycle_id", "contact_id")}
    pending = {where: tuple(columns) for columns, where in indexes if where and "= 'pending'" in where}
    assert pending == CLAIM_INDEXES


def test_a_plan_takes_its_item_ids_from_a_cached_sequence(engine: Engine) -> None:
    """Uncached, every id a plan takes locks and reads the sequence's page (0.3 s of CPU at a million items)."""
    if engine.dialect.name != "postgresql":
        pytest.skip("Postgres catalog")
    cached = "SELECT cache_size FROM pg_sequences WHERE sequencename = 'cycle_items_id_seq'"
    with engine.connect() as connection:
        assert connection.scalar(text(cached)) >= 1000


def test_a_cycle_is_done_only_when_no_item_is_pending_claimed_or_submitting(engine: Engine) -> None:
    with Session(engine) as session:
        cycle_id = planned_cycle(session, n=2)
        first, second = session.scalars(select(CycleItem).where(CycleItem.cycle_id == cycle_id)).all()
        for state in (ItemState.PENDING, ItemState.CLAIMED, ItemState.SUBMITTING):
            first.state, second.state = ItemState.DONE, state
            session.flush()
            assert cycles.finish_if_done(session, cycle_id) is False, state
        second.state = ItemState.CANCELLED
        session.flush()
        assert cycles.finish_if_done(session, cycle_id) is True
        session.commit()


def test_finish_if_done_reads_the_partial_indexes(engine: Engine) -> None:
    """Its one statement probes a cycle's items through the partial indexes, never a scan of them all."""
    if engine.dialect.name != "postgresql":
        pytest.skip("Postgres plans only")
    statement = finish_statement(1).compile(engine, compile_kwargs={"literal_binds": True})
    with engine.connect() as connection:
        connection.execute(text("SET enable_seqscan = off"))
        plan = "\n".join(connection.scalars(text(f"EXPLAIN {statement}")))
    claim_indexes = ("ix_cycle_items_due_sms", "ix_cycle_items_due_voice", "ix_cycle_items_cycle_id_state")
    assert all(name in plan for name in claim_indexes), plan


def test_finishing_and_nudging_probe_the_claim_indexes_while_most_items_are_pending(engine: Engine) -> None:
    """Whether a cycle has pending (or due) items is one probe of each channel's claim index, never a scan of
    cycle_items: asked as an EXISTS, Postgres expected a pending item among the first rows it read, and at a
    million contacts scanned past every item already sent (180-260 ms a probe)."""
    if engine.dialect.name != "postgresql":
        pytest.skip("Postgres plans only")
    with Session(engine) as session:
        session.execute(text(MANY_CONTACTS), {"n": 20000})
        cycle_id = planned_cycle(session, n=0)
        half = (session.get_one(Cycle, cycle_id).first_item_id or 0) + 10000
        session.execute(update(CycleItem).where(CycleItem.id < half).values(state=ItemState.SENT))
        session.execute(update(Cycle).where(Cycle.id == cycle_id).values(state=CycleState.DISPATCHING))
        session.commit()
    plans = []
    with engine.connect() as connection:
        connection.execute(text("ANALYZE cycle_items"))
        for statement in (finish_statement(cycle_id), nudge_statement()):
            compiled = statement.compile(engine, compile_kwargs={"literal_binds": True})
            plans.append("\n".join(connection.scalars(text(f"EXPLAIN {compiled}"))))
        connection.rollback()
    finish, nudge = plans
    assert "Seq Scan on cycle_items" not in finish, finish
    assert "Seq Scan on cycle_items" not in nudge, nudge
    assert "ix_cycle_items_due_sms" in nudge and "ix_cycle_items_due_voice" in nudge, nudge


def test_the_claim_reads_the_first_due_items_of_the_index_not_all_of_them(engine: Engine) -> None:
    """A dispatcher's claim takes the oldest due items in the order ix_cycle_items_due keeps them: it reads a
    batch's worth of index entries and stops, whatever the cycle's size. No sort may stand between the index
    and the LIMIT (under FOR UPDATE a sort is not even bounded: at a million contacts it sorted 630,000 rows
    on disk for every batch of 100)."""
    if engine.dialect.name != "postgresql":
        pytest.skip("Postgres plans only")
    with Session(engine) as session:
        cycle_id = planned_cycle(session, n=200)
    statement = due_statement(cycle_id, Channel.SMS, 10).compile(engine, compile_kwargs={"literal_binds": True})
    with engine.connect() as connection:
        connection.execute(text("ANALYZE cycle_items"))
        # Neither a scan of the table nor a sort is chosen when an index gives the order.
        connection.execute(text("SET enable_seqscan = off"))
        connection.execute(text("SET enable_sort = off"))
        plan = "\n".join(connection.scalars(text(f"EXPLAIN (ANALYZE, COSTS OFF) {statement}")))
        connection.rollback()
    assert "Sort" not in plan, plan
    scanned = re.search(r"Index Scan using ix_cycle_items_due_sms on cycle_items .*actual .* rows=(\d+)", plan)
    assert scanned is not None and int(scanned.group(1)) == 10, plan
