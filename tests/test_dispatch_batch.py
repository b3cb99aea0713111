"""SMS dispatch records a whole batch of AT's answer in a few statements: in-process against the AT
simulator (tests/sim_fixtures.py), the real Postgres and Redis; no worker process."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from sqlalchemy import event, insert, select

from shared import cycles as shared_cycles
from shared import db, metrics
from shared.at_client import AtClient, SmsRecipient, SmsSendResult
from shared.models import Contact, ContactStatus, Cycle, CycleItem, CycleState, DlrEvent, ItemState, Message
from simulator import Rule, Scenario, SimulatorServer, run_simulator_in_thread
from tests.sim_fixtures import SIM_KEY, sim_settings
from worker import cycles

ACCEPTED, INVALID, BLACKLISTED, RETRIED, BROKE, UNROUTABLE, OPTED_OUT = (f"+25471100010{i}" for i in range(7))
MIXED = {
    INVALID: 403,  # InvalidPhoneNumber: the contact is invalid
    BLACKLISTED: 406,  # UserInBlacklist: opted out
    RETRIED: 500,  # InternalServerError: tried again after a backoff
    BROKE: 405,  # InsufficientBalance: the cycle pauses, the contact is untouched
    UNROUTABLE: 407,  # CouldNotRoute: inactive (a call next cycle)
}


@pytest.fixture
def sim() -> Iterator[SimulatorServer]:
    server = run_simulator_in_thread(
        Scenario(numbers={phone: Rule(send_status=code) for phone, code in MIXED.items()}),
        api_key=SIM_KEY,
        username="sandbox",
    )
    yield server
    server.stop()


@pytest.fixture
def at(sim: SimulatorServer, monkeypatch: pytest.MonkeyPatch) -> AtClient:
    client = AtClient(sim_settings(sim))
    monkeypatch.setattr(cycles.sms, "get_at_client", lambda: client)
    return client


def planned_cycle(session, phones: list[str], statuses: dict[str, ContactStatus] | None = None) -> int:
    statuses = statuses or {}
    session.execute(insert(Contact), [{"phone": p, "status": statuses.get(p, ContactStatus.NEW)} for p in phones])
    cycle_id = shared_cycles.start_cycle(session, "Batch of many answers")
    cycles.plan_cycle(session, cycle_id)
    session.commit()
    return cycle_id


def counters(redis_client) -> dict[tuple[str, ...], int]:
    raw = redis_client.hgetall(metrics.COUNTERS)
    return {tuple(json.loads(k)): int(v) for k, v in raw.items()}


def test_a_batch_with_mixed_status_codes_is_recorded_in_one_go(session, sim, at, redis_client) -> None:
    phones = [ACCEPTED, *MIXED]
    cycle_id = planned_cycle(session, phones)

    assert cycles.dispatch_sms(cycle_id, budget_seconds=5) == "paused"

    assert len(sim.requests("/version1/messaging")) == 1  # one request for the whole batch
    session.expire_all()
    cycle = session.get(Cycle, cycle_id)
    assert cycle.state is CycleState.PAUSED and "InsufficientBalance (405)" in cycle.paused_reason
    contacts = {c.phone: c for c in session.scalars(select(Contact))}
    assert {p: c.status for p, c in contacts.items()} == {
        ACCEPTED: ContactStatus.PENDING,
        INVALID: ContactStatus.INVALID,
        BLACKLISTED: ContactStatus.OPTED_OUT,
        RETRIED: ContactStatus.NEW,
        BROKE: ContactStatus.NEW,  # an account problem is not the customer's
        UNROUTABLE: ContactStatus.INACTIVE,
    }
    messages = {m.phone: m for m in session.scalars(select(Message))}
    sent = messages[ACCEPTED]
    assert sent.send_state == "sent" and sent.at_message_id.startswith("ATXid_")
    assert (sent.send_status_code, sent.cost, sent.currency) == (102, Decimal("0.8000"), "KES")  # enqueue=1: Queued
    assert contacts[ACCEPTED].last_message_id == sent.id and contacts[ACCEPTED].last_sms_at is not None
    assert {p: (m.send_state, m.send_status_code) for p, m in messages.items() if p != ACCEPTED} == {
        p: ("failed", code) for p, code in MIXED.items()
    }
    assert messages[BROKE].send_error.startswith("not sent: InsufficientBalance")
    assert messages[RETRIED].send_error == "InternalServerError (500)"
    assert messages[INVALID].send_error.startswith("InvalidPhoneNumber (403)")

    items = {
        phone: item
        for phone, item in session.execute(
            select(Contact.phone, CycleItem).join(CycleItem, CycleItem.contact_id == Contact.id)
        ).all()
    }
    assert {p: i.state for p, i in items.items()} == {
        ACCEPTED: ItemState.SENT,
        INVALID: ItemState.FAILED,
        BLACKLISTED: ItemState.FAILED,
        RETRIED: ItemState.PENDING,
        BROKE: ItemState.PENDING,
        UNROUTABLE: ItemState.FAILED,
    }
    assert all(i.message_id == messages[p].id and i.lease_until is None for p, i in items.items())
    assert items[BROKE].attempts == 0  # given back: the attempt does not count
    assert items[RETRIED].attempts == 1 and items[RETRIED].next_attempt_at > datetime.now(UTC)
    assert items[INVALID].error == messages[INVALID].send_error

    counts = counters(redis_client)
    assert counts[("reach_sms_sends", "102", "accepted")] == 1
    for code, action in [("403", "invalid"), ("406", "opt_out"), ("500", "retry"), ("405", "pause")]:
        assert counts[("reach_sms_sends", code, action)] == 1


def test_a_paused_cycle_claims_nothing_more(session, sim, at) -> None:
    cycle_id = planned_cycle(session, [f"+2547220001{i:02d}" for i in range(30)])
    with db.session_scope() as s:
        shared_cycles.pause(s, cycle_id, "operator")
    cycle = session.get(Cycle, cycle_id)
    assert cycles.claim_sms(cycle, 10) == []
    assert cycles.dispatch_sms(cycle_id, budget_seconds=2) == "paused"
    assert sim.requests("/version1/messaging") == []


def test_statements_per_batch_do_not_grow_with_the_batch(session, sim, at) -> None:
    """Claim, send and record 100 and then 10 accepted SMS: the same handful of statements either way."""
    cycle_id = planned_cycle(session, [f"+2547330001{i:02d}" for i in range(110)])
    cycle = session.get(Cycle, cycle_id)
    session.expunge(cycle)
    settings = sim_settings()
    statements: list[str] = []

    def count(_conn, _cursor, statement, _params, _context, _executemany) -> None:
        statements.append(statement)

    engine = db.get_engine()
    per_batch = []
    event.listen(engine, "before_cursor_execute", count)
    try:
        for size in (100, 10):
            statements.clear()
            batch = cycles.claim_sms(cycle, size)
            assert len(batch) == size
            assert cycles.send_sms_batch(cycle, batch, settings) == "sent"
            per_batch.append(len(statements))
    finally:
        event.remove(engine, "before_cursor_execute", count)
    assert per_batch[0] == per_batch[1] <= 12, per_batch
    session.expire_all()
    assert session.scalar(select(CycleItem.state).distinct()) is ItemState.SENT
    pending = session.scalars(select(Contact.status).distinct()).all()
    assert pending == [ContactStatus.PENDING]


def test_a_report_that_came_before_the_batch_was_recorded_is_applied(session) -> None:
    phones = ["+254744000101", "+254744000102", "+254744000103"]
    cycle_id = planned_cycle(session, phones, {phones[2]: ContactStatus.OPTED_OUT})
    cycle = session.get(Cycle, cycle_id)
    session.expunge(cycle)
    batch = cycles.claim_sms(cycle, 10)
    assert [c.phone for c in batch] == phones[:2]  # the opted-out contact is not planned
    early = "ATXid_" + "e" * 32
    session.add(DlrEvent(at_message_id=early, status="Success", phone=phones[0], received_at=datetime.now(UTC)))
    session.commit()
    answer = SmsSendResult(
        "Sent to 2/2 Total Cost: KES 1.6000",
        [
            SmsRecipient(phones[0], 101, "Success", early, Decimal("0.8"), "KES"),
            SmsRecipient(phones[1], 101, "Success", "ATXid_" + "f" * 32, Decimal("0.8"), "KES"),
        ],
    )
    with db.session_scope() as s:
        assert cycles.record_sms_batch(s, cycle_id, batch, answer) == "sent"
    session.expire_all()
    statuses = {c.phone: c.status for c in session.scalars(select(Contact))}
    assert statuses == {
        phones[0]: ContactStatus.ACTIVE,
        phones[1]: ContactStatus.PENDING,
        phones[2]: ContactStatus.OPTED_OUT,
    }
    assert session.scalar(select(Message.status).where(Message.at_message_id == early)) == "Success"
    assert session.scalar(select(DlrEvent.applied_at).where(DlrEvent.at_message_id == early)) is not None
