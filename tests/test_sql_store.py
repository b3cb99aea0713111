"""The embedded store (`shared.sql_store`): the callback inbox and keyed values without Redis, against a
real SQLite file (as `reach up` runs it) and the test Postgres database.

The inbox must keep the Redis inbox's guarantees: each callback claimed by one drainer at a time, gone
only once acknowledged, put back when its drainer died, and applied once even when queued or drained
twice.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, delete, func, select, update
from sqlalchemy.orm import sessionmaker

from shared import sql_store
from shared.db import build_engine
from shared.models import RawCallback
from shared.store import SqlStore
from shared.store_models import InboxEntry, KvEntry
from worker import ingest

DLR = {"id": "ATXid_1", "status": "Success", "phoneNumber": "+254711000001", "networkCode": "63902"}


@pytest.fixture
def engine(dialect_engine: Engine) -> Engine:
    with dialect_engine.begin() as connection:
        connection.execute(delete(InboxEntry))
        connection.execute(delete(KvEntry))
    return dialect_engine


@pytest.fixture
def store(engine: Engine) -> SqlStore:
    return SqlStore(engine)


def push_many(box: Any, n: int) -> list[str]:
    return [box.push("sms", {"from": "+254711000001", "text": f"m{i}"}) for i in range(n)]


def test_each_callback_is_claimed_by_one_drainer_only(store: SqlStore) -> None:
    box = store.inbox()
    pushed = push_many(box, 120)
    claimed: list[str] = []
    lock = threading.Lock()

    def drainer() -> None:
        mine = store.inbox()  # its own connections, as separate drainers have
        while (batch := mine.claim(7)) is not None:
            with lock:
                claimed.extend(item.id for item in batch.items)

    threads = [threading.Thread(target=drainer) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert Counter(claimed) == Counter(pushed)  # every one, and none twice
    assert box.depth() == 0
    assert box.in_flight() > 0  # claimed but not acknowledged: still kept


def test_claim_takes_the_oldest_first_and_ack_forgets_the_batch(store: SqlStore) -> None:
    box = store.inbox()
    pushed = push_many(box, 5)
    batch = box.claim(3)
    assert batch is not None
    assert [item.id for item in batch.items] == pushed[:3]
    assert box.depth() == 2 and box.in_flight() == 1
    box.ack(batch)
    assert box.in_flight() == 0
    rest = box.claim(10)
    assert rest is not None and [item.id for item in rest.items] == pushed[3:]
    assert box.claim(10) is None


def test_release_puts_a_batch_back_ahead_of_newer_callbacks(store: SqlStore) -> None:
    box = store.inbox()
    pushed = push_many(box, 4)
    batch = box.claim(2)
    assert batch is not None
    assert box.release(batch.key) == 2
    again = box.claim(4)
    assert again is not None and [item.id for item in again.items] == pushed


def test_a_dead_drainers_batch_is_recovered_once_stale(store: SqlStore) -> None:
    box = store.inbox()
    pushed = push_many(box, 3)
    batch = box.claim(10)  # the drainer "dies" here: no ack, no release
    assert batch is not None
    assert box.recover_stale(60) == 0  # still fresh: its drainer may be alive
    assert box.claim(10) is None
    time.sleep(0.05)
    assert box.recover_stale(0.01) == 3
    again = box.claim(10)
    assert again is not None and [item.id for item in again.items] == pushed


def test_applied_twice_is_harmless(store: SqlStore, engine: Engine) -> None:
    """A batch applied but not acked (drainer killed after the commit) is recovered and applied again:
    `raw_callbacks` keeps one row per callback and the second apply changes nothing."""
    box = store.inbox()
    box.push("dlr", DLR)
    sessions = sessionmaker(engine, expire_on_commit=False)
    batch = box.claim(10)
    assert batch is not None
    with sessions.begin() as session:
        first = ingest.apply_batch(session, batch.items)
    time.sleep(0.05)
    assert box.recover_stale(0.01) == 1
    again = box.claim(10)
    assert again is not None
    with sessions.begin() as session:
        second = ingest.apply_batch(session, again.items)
    box.ack(again)
    assert sum(first.values()) == 1 and sum(second.values()) == 0
    with sessions() as session:
        assert session.scalar(select(func.count()).select_from(RawCallback)) == 1
    assert box.depth() == 0 and box.in_flight() == 0


def test_a_poison_callback_is_parked_and_never_claimed_again(store: SqlStore) -> None:
    box = store.inbox()
    push_many(box, 2)
    batch = box.claim(10)
    assert batch is not None
    box.dead_letter(batch, batch.items[0])
    box.ack(batch)
    assert box.depth() == 0 and box.in_flight() == 0 and box.claim(10) is None
    assert [dead.item.id for dead in box.dead_letters()] == [batch.items[0].id]


def test_nudge_wakes_once_per_period_until_the_drainer_is_idle(store: SqlStore, monkeypatch) -> None:
    # A period longer than three pushes can take on a loaded machine (at 500 ms the mark lapsed mid-burst).
    monkeypatch.setattr(sql_store, "NUDGE_PERIOD_MS", 60_000)
    woken: list[float] = []
    box = store.inbox(wake=lambda: woken.append(time.time()))
    push_many(box, 3)
    assert len(woken) == 1  # a burst of callbacks is one wake-up
    box.mark_idle()
    box.push("sms", {"from": "+254711000001", "text": "late"})
    assert len(woken) == 2  # the drainer went idle: the next callback wakes it again


def test_a_drainer_waiting_for_more_callbacks_is_not_woken_again(store: SqlStore) -> None:
    woken: list[float] = []
    box = store.inbox(wake=lambda: woken.append(time.time()))
    box.keep_awake(60)
    push_many(box, 3)
    assert woken == []  # the drainer that waits takes them: no second one is woken
    box.mark_idle()
    box.push("sms", {"from": "+254711000001", "text": "late"})
    assert len(woken) == 1


def test_one_drainer_at_a_time_holds_the_linger_lease_and_it_lapses(store: SqlStore, engine: Engine) -> None:
    box, other = store.inbox(), store.inbox()
    assert box.hold_linger("first", 60) and box.hold_linger("first", 60)  # taken, then renewed by its holder
    assert not other.hold_linger("second", 60)
    assert other.lingering_elsewhere("second") and not box.lingering_elsewhere("first")
    other.release_linger("second")  # not its lease: nothing happens
    assert not other.hold_linger("second", 60)
    box.release_linger("first")
    assert not other.lingering_elsewhere("second")
    assert other.hold_linger("second", 60)
    with engine.begin() as connection:  # its holder died during its wait: the lease lapses by itself
        connection.execute(
            update(KvEntry).where(KvEntry.key == sql_store.LINGER_KEY).values(expires_at=time.time() - 1)
        )
    assert not box.lingering_elsewhere("first")
    assert box.hold_linger("first", 60)


def test_voice_scripts_by_session_and_phone_and_they_expire(store: SqlStore) -> None:
    store.remember_script("Pay today", phone="+254711000001", session_id="ATVId_1")
    assert store.lookup_script(session_id="ATVId_1", phone="+254711000001") == "Pay today"
    assert store.lookup_script(session_id="ATVId_1", phone="+254700000000") is None  # not that customer's call
    assert store.lookup_script(session_id="ATVId_2", phone="+254711000001") is None  # not a call Reach placed
    sql_store.put(store.sessions, {"short": "lived"}, ttl=0.01)
    time.sleep(0.05)
    assert sql_store.get_first(store.sessions, ["short"]) is None
    assert store.housekeeping() is None
    with store.sessions() as session:
        assert session.get(KvEntry, "short") is None  # housekeeping deleted the expired key


def test_send_rate_books_turns_on_one_timeline(store: SqlStore) -> None:
    """The embedded limiter as the Redis one: 25 sends at 10/s book 2.5 s; whoever asks next waits for them."""
    started = time.monotonic()
    assert store.acquire_rate("sms", 25, per_second=10) == 0
    waited = store.acquire_rate("sms", 1, per_second=10)
    between = time.monotonic() - started  # a loaded machine takes its time between the two bookings
    assert 2.5 - between - 0.1 <= waited <= 2.6


def test_the_embedded_broker_carries_messages_and_its_delivered_ones_are_pruned(tmp_path: Path) -> None:
    """kombu's SQLAlchemy transport on a SQLite file in WAL mode, with the options `reach up` uses."""
    from kombu import Connection, Consumer, Producer, Queue

    from shared import broker
    from shared.db import prepare_sqlite

    url = f"sqla+sqlite:///{tmp_path / 'broker.sqlite3'}"
    prepare_sqlite(url)
    got: list[Any] = []
    with Connection(url, transport_options=broker.embedded_transport_options()) as connection:
        queue = Queue("ingest")
        Producer(connection).publish({"n": 1}, routing_key="ingest", declare=[queue])
        with Consumer(connection, [queue], callbacks=[lambda body, message: (got.append(body), message.ack())]):
            connection.drain_events(timeout=5)
    assert got == [{"n": 1}]
    engine = build_engine(url.removeprefix("sqla+"))
    with engine.connect() as connection:
        assert connection.exec_driver_sql("PRAGMA journal_mode").scalar_one() == "wal"
    engine.dispose()
    assert broker.prune_delivered_messages(url) == 1  # kombu kept the delivered message until now
    assert broker.prune_delivered_messages(url) == 0


def test_times_come_back_in_utc_whatever_was_written(engine: Engine) -> None:
    """SQLite keeps no offset: a time written with one must still mean the same instant when read back."""
    nairobi = timezone(timedelta(hours=3))
    written = datetime(2026, 11, 28, 12, 0, tzinfo=nairobi)
    with sessionmaker(engine).begin() as session:
        session.add(RawCallback(inbox_id="utc-check", kind="dlr", received_at=written, payload=DLR))
    with sessionmaker(engine)() as session:
        read = session.scalars(select(RawCallback.received_at).where(RawCallback.inbox_id == "utc-check")).one()
    assert read == written and read.utcoffset() == timedelta(0)


def test_a_parked_callback_keeps_its_reason_and_is_replayed_in_its_place(store: SqlStore) -> None:
    box = store.inbox()
    first, second = push_many(box, 2)
    batch = box.claim(10)
    assert batch is not None
    box.dead_letter(batch, batch.items[0], reason="BadCallback: field too long: id")
    box.release(batch.key)  # the rest of the batch went back; the parked one stays parked
    [dead] = box.dead_letters()
    assert dead.item.id == first and dead.reason.startswith("BadCallback") and dead.parked_at is not None
    assert box.depth() == 1
    assert box.replay(["no-such-id"]) == 0
    assert box.replay([first]) == 1 and box.dead_letters() == []
    again = box.claim(10)
    assert again is not None and [item.id for item in again.items] == [first, second]  # oldest first, as before


def test_the_embedded_brokers_tables_exist_before_any_process_opens_it(tmp_path: Path) -> None:
    """kombu creates its tables when a process first opens the broker, under a lock of that process only: the
    receiver, worker and beat that `reach up` starts together then raced, and one failed with `table
    kombu_queue already exists`. `reach up` prepares the file, tables included, before starting any child."""
    from shared.broker import prepare_embedded_broker

    url = f"sqla+sqlite:///{tmp_path / 'broker.sqlite3'}"
    prepare_embedded_broker(url)
    engine = build_engine(url.removeprefix("sqla+"))
    with engine.connect() as connection:
        tables = set(connection.exec_driver_sql("SELECT name FROM sqlite_master WHERE type = 'table'").scalars())
        assert connection.exec_driver_sql("PRAGMA journal_mode").scalar_one() == "wal"
    engine.dispose()
    assert {"kombu_queue", "kombu_message"} <= tables
