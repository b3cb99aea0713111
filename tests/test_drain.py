"""The drain never throws away a callback that got a 200 for a reason that is not about the callback itself.

Only a per-item data error parks an item (a field its kind cannot parse, a database data error that
reproduces with that item alone); a database that refuses writes, a soft time limit or anything else sends
the batch back to the inbox. Parked callbacks keep their reason, are listed by `reach inbox dead` and put
back by `reach inbox replay`. The database faults here are real: a private Postgres database made read-only,
a column narrower than the code expects, a row lock that holds the drain until its soft time limit.
"""

from __future__ import annotations

import json
import os
import signal
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from billiard.exceptions import SoftTimeLimitExceeded
from click.testing import CliRunner
from sqlalchemy import create_engine, func, select, text
from sqlalchemy.engine import make_url

from reach_cli.main import cli
from shared import db, inbox
from shared.callbacks import storable_fields
from shared.models import Contact, ContactStatus, DlrEvent, IncomingSms, Message, RawCallback
from simulator import wire
from tests.conftest import wait_for
from tests.services import fresh_database, reset_cached_clients
from worker import ingest
from worker.drain import drain_inbox

SHORTCODE = "21512"


@pytest.fixture
def private_database(clean: None, database_url: str) -> Iterator[str]:
    """A migrated database of this test's own, which the drain (and the CLI) use instead of the session's."""
    url = make_url(database_url).set(database=f"{make_url(database_url).database}_drain")
    with fresh_database(url.render_as_string(hide_password=False)) as private_url:
        saved = os.environ["DATABASE_URL"]
        os.environ["DATABASE_URL"] = private_url
        reset_cached_clients()
        try:
            yield private_url
        finally:
            os.environ["DATABASE_URL"] = saved
            reset_cached_clients()


def admin_execute(url: str, statement: str) -> None:
    """Run DDL from the `postgres` database (a read-only database cannot make itself writable again)."""
    admin = create_engine(make_url(url).set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(statement))
    admin.dispose()


def set_read_only(url: str, read_only: bool) -> None:
    name = make_url(url).database
    admin_execute(url, f'ALTER DATABASE "{name}" SET default_transaction_read_only = {"on" if read_only else "off"}')
    db.get_engine().dispose()  # new connections take the database's new default


def seed_messages(count: int) -> list[dict[str, str]]:
    """`count` contacts with one SMS each; returns a `Success` report for each."""
    reports = []
    with db.session_scope() as session:
        for i in range(count):
            phone = f"+2547110{i:05d}"
            contact = Contact(phone=phone, status=ContactStatus.PENDING)
            session.add(contact)
            session.flush()
            message = Message(contact_id=contact.id, phone=phone, text="hi", at_message_id=wire.new_message_id())
            session.add(message)
            session.flush()
            contact.last_message_id = message.id
            reports.append(wire.dlr(message.at_message_id, "Success", phone))
    return reports


def push(box: inbox.Inbox, kind: str, form: dict[str, str]) -> str:
    """What the receiver does with a valid callback."""
    return box.push(kind, storable_fields(form))


def push_raw(redis_client: Any, kind: str, data: dict[str, str]) -> str:
    """An item as an older receiver could have queued it (without today's checks)."""
    item_id, payload = inbox.encode(kind, data)
    redis_client.lpush(inbox.INBOX, payload)
    return item_id


def count(model: Any, *where: Any) -> int:
    with db.session_scope() as session:
        return session.scalar(select(func.count()).select_from(model).where(*where)) or 0


def applied_reports() -> int:
    return count(DlrEvent, DlrEvent.applied_at.is_not(None))


def parked(redis_client: Any) -> list[dict[str, Any]]:
    return [json.loads(raw) for raw in redis_client.lrange(inbox.DEAD_LETTERS, 0, -1)]


def settled(redis_client: Any) -> bool:
    return redis_client.llen(inbox.INBOX) == 0 and redis_client.zcard(inbox.CLAIMS) == 0


def drain(redis_client: Any) -> int:
    return drain_inbox(inbox.Inbox(redis_client), batch_size=500, budget_seconds=30)


def reach(*args: str) -> Any:
    return CliRunner().invoke(cli, list(args), prog_name="reach", catch_exceptions=False)


# -- the database refuses writes ---------------------------------------------------------------------------------


def test_callbacks_drained_while_the_database_is_read_only_are_applied_after_it_recovers(
    private_database: str, redis_client: Any
) -> None:
    reports = seed_messages(30)
    box = inbox.Inbox(redis_client)
    stop_from = "+254711099999"
    for report in reports:
        push(box, "dlr", report)
    push(box, "sms", wire.incoming_sms(stop_from, SHORTCODE, "STOP", "in-ro-1"))
    set_read_only(private_database, True)  # a fail-over: the old primary is a replica now
    try:
        assert drain(redis_client) == 0
        assert parked(redis_client) == [], "callbacks dead-lettered while the database refused writes"
        assert redis_client.llen(inbox.INBOX) == len(reports) + 1 and redis_client.zcard(inbox.CLAIMS) == 0
    finally:
        set_read_only(private_database, False)
    drain(redis_client)
    assert settled(redis_client) and parked(redis_client) == []
    assert applied_reports() == len(reports)
    with db.session_scope() as session:
        assert (
            session.scalars(select(Contact.status).where(Contact.phone == stop_from)).one() is ContactStatus.OPTED_OUT
        )


# -- one poison item ---------------------------------------------------------------------------------------------


def test_a_poison_item_is_parked_alone_listed_and_replayed_once_after_the_fix(
    private_database: str, redis_client: Any
) -> None:
    reports = seed_messages(40)
    box = inbox.Inbox(redis_client)
    for report in reports[:20]:
        push(box, "dlr", report)
    # A column narrower than the code expects (a schema behind its code, or a hand-made change): a
    # database data error that only this callback's long linkId hits.
    with db.get_engine().begin() as connection:
        connection.execute(text("ALTER TABLE incoming_sms ALTER COLUMN link_id TYPE varchar(8)"))
    poison = push(box, "sms", wire.incoming_sms("+254711000777", SHORTCODE, "hello", "in-p-1", link_id="L" * 40))
    for report in reports[20:]:
        push(box, "dlr", report)
    drain(redis_client)
    assert applied_reports() == len(reports)  # the other callbacks of its batch are applied
    assert settled(redis_client)
    [dead] = parked(redis_client)
    assert dead["id"] == poison and dead["kind"] == "sms"
    assert "StringDataRightTruncation" in dead["reason"] and dead["parked_at"] and dead["received_at"]

    listed = reach("inbox", "dead", "--json")
    assert listed.exit_code == 0, listed.output
    [shown] = json.loads(listed.output)
    assert shown["id"] == poison and shown["data"]["from"] == "+254711000777" and "reason" in shown
    assert poison in reach("inbox", "dead").output

    with db.get_engine().begin() as connection:  # the fix
        connection.execute(text("ALTER TABLE incoming_sms ALTER COLUMN link_id TYPE varchar(100)"))
    replayed = reach("inbox", "replay", "--id", poison)
    assert replayed.exit_code == 0 and "1" in replayed.output, replayed.output
    assert parked(redis_client) == []
    drain(redis_client)
    assert count(IncomingSms, IncomingSms.at_id == "in-p-1") == 1
    assert count(RawCallback, RawCallback.inbox_id == poison) == 1


def test_an_item_an_older_receiver_queued_is_parked_with_its_reason(session: Any, redis_client: Any) -> None:
    reports = seed_messages(5)
    box = inbox.Inbox(redis_client)
    for report in reports:
        push(box, "dlr", report)
    old = push_raw(redis_client, "sms", {"from": "+254711000001", "to": "1", "id": "x" * 500})
    drain(redis_client)
    assert applied_reports() == len(reports) and settled(redis_client)
    [dead] = parked(redis_client)
    assert dead["id"] == old and dead["reason"].startswith("BadCallback: field too long: id")


def test_replaying_a_callback_applied_already_applies_it_once(session: Any, redis_client: Any) -> None:
    box = inbox.Inbox(redis_client)
    push(box, "sms", wire.incoming_sms("+254711000001", SHORTCODE, "STOP", "in-r-1"))
    batch = box.claim(10)
    assert batch is not None
    with db.session_scope() as applying:
        ingest.apply_batch(applying, batch.items)
    box.dead_letter(batch, batch.items[0], reason="parked after its commit")  # applied, and parked all the same
    box.ack(batch)
    assert box.replay([batch.items[0].id]) == 1
    assert box.replay([batch.items[0].id]) == 0  # no longer parked
    drain(redis_client)
    assert settled(redis_client) and parked(redis_client) == []
    assert count(RawCallback) == 1 and count(IncomingSms) == 1


# -- a soft time limit ------------------------------------------------------------------------------------------


@pytest.fixture
def soft_time_limit() -> Iterator[None]:
    """SIGUSR1 raises `SoftTimeLimitExceeded`, as in a Celery pool process at its soft time limit."""

    def raise_soft_limit(_signum: int, _frame: Any) -> None:
        raise SoftTimeLimitExceeded()

    previous = signal.signal(signal.SIGUSR1, raise_soft_limit)
    yield
    signal.signal(signal.SIGUSR1, previous)


def test_a_soft_time_limit_mid_batch_sends_the_batch_back(
    session: Any, redis_client: Any, soft_time_limit: None
) -> None:
    stopper = "+254711000042"
    session.add(Contact(phone=stopper, status=ContactStatus.ACTIVE))
    session.commit()
    box = inbox.Inbox(redis_client)
    poison = push_raw(redis_client, "sms", {"from": stopper, "to": SHORTCODE, "id": "y" * 500})
    push(box, "sms", wire.incoming_sms(stopper, SHORTCODE, "STOP", "in-stl-1"))
    holder = db.get_engine().connect()  # another transaction holds the contact: the STOP waits for it
    holder.execute(text("SELECT id FROM contacts WHERE phone = :phone FOR UPDATE"), {"phone": stopper})

    def expire_when_waiting() -> None:
        waiting = text(
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND datname = current_database()"
        )

        def drain_waits() -> bool:
            # A connection per look: pg_stat_activity is a snapshot taken once per transaction.
            with db.get_engine().connect() as probe:
                return probe.execute(waiting).scalar_one() > 0

        wait_for(drain_waits, timeout=30, what="the drain waiting on the lock")
        os.kill(os.getpid(), signal.SIGUSR1)

    timer = threading.Thread(target=expire_when_waiting)
    timer.start()
    try:
        drain(redis_client)
    finally:
        timer.join()
        holder.rollback()
        holder.close()
    assert [dead["id"] for dead in parked(redis_client)] == [poison]  # only the poison, not the STOP
    assert redis_client.llen(inbox.INBOX) == 1
    drain(redis_client)
    assert session.scalars(select(Contact.status).where(Contact.phone == stopper)).one() is ContactStatus.OPTED_OUT


def test_an_item_that_trips_the_code_is_parked_and_the_rest_applied(session: Any, redis_client: Any) -> None:
    """A bug one odd callback triggers (here: fields that are a JSON list, which the parser cannot read) is
    about that callback: the batch is split down to it, it is parked, the others are applied."""
    reports = seed_messages(5)
    box = inbox.Inbox(redis_client)
    for report in reports[:3]:
        push(box, "dlr", report)
    odd = push_raw(redis_client, "dlr", ["id", "ATXid_not_a_mapping"])  # type: ignore[arg-type]
    for report in reports[3:]:
        push(box, "dlr", report)
    drain(redis_client)
    assert applied_reports() == len(reports) and settled(redis_client)
    [dead] = parked(redis_client)
    assert dead["id"] == odd and dead["reason"].startswith("AttributeError")


def test_a_report_the_database_refuses_is_parked_and_the_rest_applied(session: Any, redis_client: Any) -> None:
    """On Postgres a batch of reports goes as one JSON document to statements on the driver's own cursor
    (worker/ingest/staging.py): a value the database refuses (here an inbox id longer than
    `raw_callbacks.inbox_id`, as an older receiver could have queued it) must still be a data error of that one
    item, so it is parked, not the whole batch sent back again and again."""
    reports = seed_messages(5)
    box = inbox.Inbox(redis_client)
    for report in reports[:2]:
        push(box, "dlr", report)
    long_id = "i" * 60
    received = datetime.now(UTC).isoformat()
    redis_client.lpush(
        inbox.INBOX, json.dumps({"id": long_id, "kind": "dlr", "received_at": received, "data": reports[2]})
    )
    for report in reports[3:]:
        push(box, "dlr", report)
    drain(redis_client)
    assert applied_reports() == len(reports) - 1 and settled(redis_client)
    [dead] = parked(redis_client)
    assert dead["id"] == long_id and dead["reason"].startswith("StringDataRightTruncation")


@pytest.mark.parametrize(
    ("field", "value", "reason"),
    [
        ("id", 12345, "TypeError"),  # JSON would carry a number through to a text column: not text, parked
        ("data", {"id": "ATXid_x", "status": "Success", "note": "nul\u0000"}, "UntranslatableCharacter"),
        ("data", {"id": "ATXid_x", "status": "Success", "note": float("nan")}, "InvalidTextRepresentation"),
    ],
)
def test_an_item_queued_by_hand_that_postgres_cannot_take_is_parked(
    session: Any, redis_client: Any, field: str, value: Any, reason: str
) -> None:
    """The batch's rows go to Postgres as one JSON document: an id that is not text, or a payload JSONB cannot
    hold (NUL, NaN), is still that one item's error, parked as when each went by COPY, and the others applied."""
    reports = seed_messages(3)
    box = inbox.Inbox(redis_client)
    push(box, "dlr", reports[0])
    doc = {"id": "hand-1", "kind": "sms", "received_at": datetime.now(UTC).isoformat(), "data": {}}
    redis_client.lpush(inbox.INBOX, json.dumps({**doc, field: value}))
    for report in reports[1:]:
        push(box, "dlr", report)
    drain(redis_client)
    assert applied_reports() == len(reports) and settled(redis_client)
    [dead] = parked(redis_client)
    assert dead["reason"].startswith(reason), dead
