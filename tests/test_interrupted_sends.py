"""Sends whose AT request was cut off (worker/unknown_sends.py): sent again once the evidence says AT never
took them, under traffic too, and a report that still comes afterwards is adopted, not lost.

In-process against real Postgres and Redis: the receiver's app queues callbacks, the drain function applies
them, and the cycle housekeeping's function (`reconcile_interrupted`) decides. The same with a real worker
and a stream of callbacks is in tests/test_worker.py.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import redis as redis_lib
from sqlalchemy import insert, select

from shared import cycle_report, metrics, migrate
from shared import cycles as shared_cycles
from shared.db import build_engine
from shared.inbox import INBOX, Inbox, encode
from shared.models import (
    Channel,
    Contact,
    ContactStatus,
    Cycle,
    CycleItem,
    CycleState,
    DlrEvent,
    ItemState,
    Message,
)
from shared.settings import load_settings
from shared.store import SqlStore
from simulator import wire
from tests.conftest import WEBHOOK_TOKEN
from worker import outcomes
from worker.cycles import reconcile_interrupted

PHONE = "+254711000201"
GRACE = timedelta(minutes=1)


def now() -> datetime:
    return datetime.now(UTC)


def stuck_item(session: Any, phone: str = PHONE, lease_ended: timedelta = timedelta(minutes=10)) -> CycleItem:
    """A cycle item left `submitting` by a dispatcher that died while AT was answering, its lease over."""
    contact = Contact(phone=phone, status=ContactStatus.NEW)
    session.add(contact)
    session.flush()
    cycle_id = shared_cycles.start_cycle(session, "hello")
    cycle = session.get_one(Cycle, cycle_id)
    cycle.state, cycle.plan = CycleState.DISPATCHING, {"sms": 1, "voice": 0, "skipped": {}}
    item = CycleItem(
        cycle_id=cycle_id,
        contact_id=contact.id,
        channel=Channel.SMS,
        state=ItemState.SUBMITTING,
        attempts=1,
        lease_until=now() - lease_ended,
    )
    session.add(item)
    session.flush()
    message = Message(
        contact_id=contact.id,
        cycle_id=cycle_id,
        cycle_item_id=item.id,
        phone=phone,
        text="hello",
        send_state="submitting",
        created_at=now() - lease_ended - timedelta(minutes=1),
    )
    session.add(message)
    session.flush()
    item.message_id = message.id
    session.commit()
    return item


def post_dlr(client: Any, at_id: str, phone: str, status: str = "Success") -> None:
    response = client.post(f"/dlr?token={WEBHOOK_TOKEN}", data=wire.dlr(at_id, status, phone))
    assert response.status_code == 200, response.text


def reconcile(session: Any, redis_client: redis_lib.Redis) -> dict[str, int]:
    counts = reconcile_interrupted(session, Inbox(redis_client), GRACE)
    session.commit()
    return counts


def reread(session: Any, model: Any, row_id: int) -> Any:
    session.expire_all()
    return session.get_one(model, row_id)


# -- the inbox's oldest pending callback --------------------------------------------------------------------


@pytest.fixture(params=["redis", "sqlite", "postgres"])
def any_inbox(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    """The Redis inbox, and the embedded one on each database it runs on (a migrated SQLite file, Postgres)."""
    if request.param == "redis":
        request.getfixturevalue("clean")
        yield Inbox(request.getfixturevalue("redis_client"))
        return
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'reach.sqlite3'}"
        migrate.upgrade(url)
    else:
        url = request.getfixturevalue("database_url")
        request.getfixturevalue("clean")
    engine = build_engine(url)
    yield SqlStore(engine).inbox()
    engine.dispose()


def test_oldest_received_at_covers_queued_and_claimed_callbacks(any_inbox: Any) -> None:
    assert any_inbox.oldest_received_at() is None
    before = now()
    any_inbox.push("dlr", {"id": "ATXid_a", "status": "Success"})
    between = now()
    any_inbox.push("dlr", {"id": "ATXid_b", "status": "Success"})
    assert before <= any_inbox.oldest_received_at() <= between

    batch = any_inbox.claim(1)  # a drainer is applying the older one
    assert batch is not None and batch.items[0].data["id"] == "ATXid_a"
    assert before <= any_inbox.oldest_received_at() <= between
    any_inbox.ack(batch)
    assert between <= any_inbox.oldest_received_at() <= now()

    last = any_inbox.claim(5)
    assert last is not None
    any_inbox.release(last.key)  # back in the queue: still pending
    assert between <= any_inbox.oldest_received_at() <= now()
    any_inbox.ack(any_inbox.claim(5))
    assert any_inbox.oldest_received_at() is None


# -- when an interrupted send is sent again -----------------------------------------------------------------


def test_callbacks_received_after_the_cutoff_do_not_hold_the_resend_back(client, session, redis_client) -> None:
    item = stuck_item(session)
    for i in range(3):  # steady traffic: some queued, one batch being applied right now
        post_dlr(client, f"ATXid_other{i}", f"+25471100030{i}")
    assert Inbox(redis_client).claim(1) is not None

    counts = reconcile(session, redis_client)

    assert counts["resent"] == 1, counts
    assert reread(session, CycleItem, item.id).state is ItemState.PENDING


def test_a_callback_received_before_the_cutoff_is_applied_first_and_adopts_the_send(
    session, redis_client, drain
) -> None:
    item = stuck_item(session)
    # AT's report for the lost answer, received before the cutoff (the lease ended 10 minutes ago, the grace
    # is 1) and still queued: a backlog behind a slow drain.
    received = now() - timedelta(minutes=9, seconds=30)
    _id, payload = encode("dlr", wire.dlr("ATXid_lost", "Success", PHONE), now=received)
    redis_client.lpush(INBOX, payload)

    assert reconcile(session, redis_client)["waiting"] == 1  # not sent again on a report still queued
    drain()
    assert reconcile(session, redis_client)["adopted"] == 1

    message = reread(session, Message, item.message_id)
    assert (message.at_message_id, message.send_state, message.status) == ("ATXid_lost", "sent", "Success")


# -- a report that comes after the resend ---------------------------------------------------------------------


def resend_went_out(session: Any, item: CycleItem, at_id: str) -> Message:
    """What the dispatcher records when the resend of `item` is accepted by AT."""
    second = Message(
        contact_id=item.contact_id,
        cycle_id=item.cycle_id,
        cycle_item_id=item.id,
        phone=PHONE,
        text="hello",
        send_state="sent",
        at_message_id=at_id,
    )
    session.add(second)
    session.flush()
    row = session.get_one(CycleItem, item.id)
    row.state, row.message_id = ItemState.SENT, second.id
    outcomes.mark_contact_pending(session, item.contact_id, second.id)
    session.commit()
    return second


def test_a_report_after_the_resend_is_adopted_onto_the_first_attempt(
    client, session, redis_client, drain, caplog
) -> None:
    item = stuck_item(session)
    first_id = item.message_id
    assert reconcile(session, redis_client)["resent"] == 1
    second = resend_went_out(session, item, "ATXid_second")
    post_dlr(client, "ATXid_second", PHONE)
    post_dlr(client, "ATXid_first", PHONE)  # AT had sent the first one after all: its report is late
    drain()

    with caplog.at_level(logging.WARNING, logger="worker.unknown_sends"):
        reconcile(session, redis_client)

    first = reread(session, Message, first_id)
    assert (first.at_message_id, first.send_state, first.status) == ("ATXid_first", "sent", "Success")
    assert "sent twice" in first.send_error
    event = session.scalars(select(DlrEvent).where(DlrEvent.at_message_id == "ATXid_first")).one()
    assert event.applied_at is not None  # matched, not left for rescans
    assert reread(session, Contact, item.contact_id).last_message_id == second.id  # follows the newest
    assert redis_client.hget(metrics.COUNTERS, '["reach_sms_sent_twice"]') == b"1"
    assert cycle_report.report(session, item.cycle_id)["sms_detail"]["sent_twice"] == 1  # the operator sees it
    assert any("sent twice" in r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)


def test_a_report_before_the_resend_went_out_takes_the_resend_back(client, session, redis_client, drain) -> None:
    item = stuck_item(session)
    assert reconcile(session, redis_client)["resent"] == 1  # queued again, not yet sent
    post_dlr(client, "ATXid_first", PHONE)
    drain()

    assert reconcile(session, redis_client)["adopted_late"] == 1

    row = reread(session, CycleItem, item.id)
    assert (row.state, row.message_id) == (ItemState.SENT, item.message_id)
    first = reread(session, Message, item.message_id)
    assert (first.at_message_id, first.send_state) == ("ATXid_first", "sent")
    contact = reread(session, Contact, item.contact_id)
    assert contact.last_message_id == first.id and contact.status is ContactStatus.ACTIVE
    assert redis_client.hget(metrics.COUNTERS, '["reach_sms_sent_twice"]') is None


# -- how long the grace is ------------------------------------------------------------------------------------


def sent_and_reported(session: Any, delays: list[timedelta], sent_ago: timedelta = timedelta(hours=1)) -> None:
    contact = Contact(phone=PHONE, status=ContactStatus.PENDING)
    session.add(contact)
    session.flush()
    sent_at = now() - sent_ago
    row = {"contact_id": contact.id, "phone": PHONE, "text": "hi", "send_state": "sent", "created_at": sent_at}
    session.execute(insert(Message), [{**row, "at_message_id": f"ATXid_{i}"} for i in range(len(delays))])
    session.execute(
        insert(DlrEvent),
        [
            {"at_message_id": f"ATXid_{i}", "status": "Success", "phone": PHONE, "received_at": sent_at + delay}
            for i, delay in enumerate(delays)
        ],
    )
    session.commit()


def test_the_grace_grows_to_at_recent_p99_report_delay_within_its_cap(session) -> None:
    from worker import unknown_sends

    sent_and_reported(session, [timedelta(seconds=10)] * 98 + [timedelta(minutes=10)] * 2)

    assert unknown_sends.report_delay_p99(session) == timedelta(minutes=10)
    grace = unknown_sends.effective_grace
    assert grace(session, load_settings(unknown_send_grace_seconds=2)) == timedelta(minutes=10)
    assert grace(session, load_settings(unknown_send_grace_seconds=900)) == timedelta(seconds=900)
    capped = load_settings(unknown_send_grace_seconds=2, unknown_send_grace_max_seconds=300)
    assert grace(session, capped) == timedelta(seconds=300)


def test_the_grace_ignores_sends_older_than_a_day(session) -> None:
    from worker import unknown_sends

    sent_and_reported(session, [timedelta(hours=5)] * 100, sent_ago=timedelta(days=2))

    assert unknown_sends.report_delay_p99(session) is None
    assert unknown_sends.effective_grace(session, load_settings(unknown_send_grace_seconds=2)) == timedelta(seconds=2)


def test_too_few_reports_say_nothing_about_at_pace(session) -> None:
    from worker import unknown_sends

    sent_and_reported(session, [timedelta(seconds=10)] * 98 + [timedelta(hours=5)])  # one outlier is no P99

    assert unknown_sends.report_delay_p99(session) is None
