"""The whole loop through real processes: receiver over HTTP, Redis, a Celery worker subprocess,
Postgres, and the AT simulator posting delivery reports and voice callbacks back to the receiver."""

from __future__ import annotations

import json
import threading
import time
from datetime import timedelta

import pytest
import requests
from sqlalchemy import func, select

from shared.inbox import Inbox
from shared.models import (
    Call,
    Contact,
    ContactStatus,
    Cycle,
    CycleItem,
    CycleState,
    DlrEvent,
    IncomingSms,
    ItemState,
    Message,
    RawCallback,
)
from simulator import wire
from simulator.scenario import Scenario
from tests.conftest import API_TOKEN, AT_VOICE_NUMBER, FIXTURES, WEBHOOK_TOKEN, wait_for
from worker import sending

pytestmark = pytest.mark.worker

AUTH = {"Authorization": f"Bearer {API_TOKEN}"}


def count(session, model) -> int:
    session.expire_all()
    return session.scalar(select(func.count()).select_from(model))


def contact(session, phone: str) -> Contact | None:
    session.expire_all()
    return session.scalars(select(Contact).where(Contact.phone == phone)).one_or_none()


def send(receiver: str, to: str, message: str) -> dict:
    response = requests.post(f"{receiver}/communicate", json={"to": to, "message": message}, headers=AUTH, timeout=5)
    assert response.status_code == 202, response.text
    return response.json()


def test_seed_curl_payloads_reach_postgres(live, receiver, session) -> None:
    """The prototype's README examples, posted as its curl commands did (JSON), end up stored."""
    for path, name in [
        ("/dlr", "dlr"),
        ("/receiveSMS", "receiveSMS"),
        ("/ussd", "ussd"),
        ("/communicate", "communicate_voice"),
    ]:
        body = json.loads((FIXTURES / "seed" / f"{name}.json").read_text())
        response = requests.post(f"{receiver}{path}?token={WEBHOOK_TOKEN}", json=body, timeout=5)
        assert response.status_code == 200, (path, response.text)
    wait_for(lambda: count(session, RawCallback) == 4, what="four callbacks applied")
    assert count(session, DlrEvent) == 1 and count(session, IncomingSms) == 1
    assert session.scalars(select(Call)).one().session_id == "ATidx13892018322632001901"


def test_many_callbacks_are_applied_exactly_once(live, receiver, session) -> None:
    contacts = [Contact(phone=f"+25471100{i:04d}", status=ContactStatus.PENDING) for i in range(200)]
    session.add_all(contacts)
    session.flush()
    messages = [
        Message(contact_id=c.id, phone=c.phone, text="hi", at_message_id=wire.new_message_id()) for c in contacts
    ]
    session.add_all(messages)
    session.flush()
    for c, m in zip(contacts, messages, strict=True):
        c.last_message_id = m.id
    session.commit()
    with requests.Session() as http:
        for m in messages:
            for status in ("Sent", "Success", "Success"):
                r = http.post(f"{receiver}/dlr?token={WEBHOOK_TOKEN}", data=wire.dlr(m.at_message_id, status, m.phone))
                assert r.status_code == 200
    wait_for(lambda: count(session, RawCallback) == 600, timeout=60, what="600 callbacks applied")
    assert count(session, DlrEvent) == 400
    session.expire_all()
    assert session.scalar(select(func.count()).where(Contact.status == ContactStatus.ACTIVE)) == 200


def test_sms_send_and_delivery_report_round_trip(live, receiver, session) -> None:
    """Operator send → worker → AT (simulator) → DLR callback → receiver → worker → contact active."""
    phone = "+254722000001"
    live.set_scenario(Scenario.from_dict({"default": {"dlr": ["Sent", "Buffered", "Success"]}}))
    answer = send(receiver, phone, "Your order has shipped")
    assert answer["channel"] == "sms"
    wait_for(lambda: (c := contact(session, phone)) and c.status is ContactStatus.ACTIVE, timeout=30, what="active")
    message = session.get(Message, answer["id"])
    assert message.send_state == "sent" and message.status == "Success"
    assert message.at_message_id.startswith("ATXid_") and message.send_status_code == 102
    assert str(message.cost) == "0.8000" and message.currency == "KES"
    sent = live.requests("/version1/messaging")
    assert len(sent) == 1 and sent[0]["form"]["to"] == phone


def test_failed_sms_marks_contact_inactive_then_voice_call_speaks_the_message(live, receiver, session) -> None:
    phone = "+254733000003"
    live.set_scenario(
        Scenario.from_dict(
            {
                "default": {"dlr": ["Sent", ["Failed", "UserIsInactive"]], "voice": "answered", "dtmf": "1"},
            }
        )
    )
    send(receiver, phone, "First notice")
    wait_for(lambda: (c := contact(session, phone)) and c.status is ContactStatus.INACTIVE, timeout=30)
    assert contact(session, phone).last_failure_reason == "UserIsInactive"

    answer = send(receiver, phone, "Second notice: please pay & confirm")
    assert answer["channel"] == "voice"
    wait_for(lambda: (c := session.get(Call, answer["id"])) and session.refresh(c) is None and c.ended_at, timeout=30)
    call = session.get(Call, answer["id"])
    assert call.session_id.startswith("ATVId_") and call.outcome == "answered"
    assert call.acknowledged and call.dtmf_digits == "1" and call.duration_seconds == 12
    assert live.requests("/call")[0]["form"]["from"] == AT_VOICE_NUMBER
    live_answer = next(cb for cb in live.callbacks("voice") if cb["form"]["isActive"] == "1")
    assert "Second notice: please pay &amp; confirm" in live_answer["reply"]
    stored = contact(session, phone)
    assert stored.last_call_status == "Success" and stored.last_hangup_cause == "NORMAL_CLEARING"


def test_busy_call_is_recorded(live, receiver, session) -> None:
    phone = "+254744000004"
    session.add(Contact(phone=phone, status=ContactStatus.INACTIVE))
    session.commit()
    live.set_scenario(Scenario.from_dict({"default": {"voice": "USER_BUSY"}}))
    answer = send(receiver, phone, "hello")
    wait_for(lambda: (c := session.get(Call, answer["id"])) and session.refresh(c) is None and c.ended_at, timeout=30)
    call = session.get(Call, answer["id"])
    assert (call.hangup_cause, call.outcome, call.status) == ("USER_BUSY", "retry_later", "NotAnswered")


def test_send_is_retried_after_at_throttled_it_and_sent_once(live, receiver, session) -> None:
    phone = "+254755000005"
    live.set_scenario(Scenario.from_dict({"faults": [{"path": "/version1/messaging", "status": 429, "count": 1}]}))
    answer = send(receiver, phone, "retry me")
    wait_for(
        lambda: (m := session.get(Message, answer["id"])) and session.refresh(m) is None and m.send_state == "sent",
        timeout=40,
        what="sent after retry",
    )
    assert len(live.requests("/version1/messaging")) == 2  # the 429 (known not sent), then the one that went out


# -- one-off sends AT did not answer --------------------------------------------------------------------------


def message_row(session, message_id: int) -> Message:
    session.expire_all()
    return session.get_one(Message, message_id)


def reports_for(session, phone: str) -> int:
    session.expire_all()
    return session.scalar(select(func.count()).select_from(DlrEvent).where(DlrEvent.phone == phone))


def settle(session, grace: timedelta) -> tuple[int, list[tuple[str, int]]]:
    """What send housekeeping does, without waiting out its two minutes (the task's time limit)."""
    result = sending.settle_unanswered(session, grace, oldest_pending=None, settle_after=timedelta(0))
    session.commit()
    return result


def send_unanswered(live, receiver, session, phone: str, fault: str) -> int:
    """A one-off SMS whose AT request meets `fault` ("slow": AT sends, the answer is lost; "timeout": AT
    does nothing); returns its id once the worker has given up waiting for the answer."""
    faults = [{"path": "/version1/messaging", "status": fault, "count": 1}]
    live.set_scenario(Scenario.from_dict({"faults": faults, "timeout_seconds": 8}))
    message_id = send(receiver, phone, f"{fault} answer")["id"]
    wait_for(
        lambda: "did not answer" in (message_row(session, message_id).send_error or ""),
        timeout=30,
        what="the send to time out",
    )
    return message_id


def test_sms_at_sent_but_never_answered_is_adopted_from_its_report_not_sent_again(live, receiver, session) -> None:
    phone = "+254766000006"
    message_id = send_unanswered(live, receiver, session, phone, "slow")
    assert message_row(session, message_id).send_state == "submitting"  # not retried blindly
    # Counted for this number: a previous test's late reports may still be draining into the emptied tables.
    wait_for(lambda: reports_for(session, phone) == 2, timeout=30, what="AT's reports applied")

    assert settle(session, grace=timedelta(hours=1)) == (1, [])

    message = message_row(session, message_id)
    assert message.send_state == "sent" and message.at_message_id.startswith("ATXid_")
    assert message.status == "Success" and contact(session, phone).status is ContactStatus.ACTIVE
    assert len(live.requests("/version1/messaging")) == 1


def test_sms_at_never_answered_nor_reported_is_sent_again_once_after_the_grace(live, receiver, session) -> None:
    phone = "+254766000007"
    message_id = send_unanswered(live, receiver, session, phone, "timeout")
    assert settle(session, grace=timedelta(hours=1)) == (0, [])  # within the grace: wait for a report
    assert message_row(session, message_id).send_state == "submitting"

    assert settle(session, grace=timedelta(0)) == (0, [("reach.send.sms", message_id)])
    assert message_row(session, message_id).send_state == "queued"
    assert sending.send_message(message_id) == "sent"  # what the published task does

    wait_for(lambda: (c := contact(session, phone)) and c.status is ContactStatus.ACTIVE, timeout=30, what="active")
    accepted = [r for r in live.requests("/version1/messaging") if r["status"] == 201]
    assert len(live.requests("/version1/messaging")) == 2 and len(accepted) == 1


def test_call_at_placed_but_never_answered_is_adopted_from_its_callbacks(live, receiver, session) -> None:
    phone = "+254766000008"
    session.add(Contact(phone=phone, status=ContactStatus.INACTIVE))  # so /communicate calls
    session.commit()
    faults = [{"path": "/call", "status": "slow", "count": 1}]
    live.set_scenario(Scenario.from_dict({"default": {"voice": "answered"}, "faults": faults, "timeout_seconds": 8}))
    answer = send(receiver, phone, "call me")
    assert answer["channel"] == "voice"

    def call() -> Call:
        session.expire_all()
        return session.get_one(Call, answer["id"])

    wait_for(lambda: "did not answer" in (call().send_error or ""), timeout=30, what="the call request to time out")
    wait_for(lambda: call().ended_at is not None, timeout=30, what="AT's callbacks for the call applied")

    assert settle(session, grace=timedelta(hours=1)) == (1, [])

    assert call().send_state == "sent" and call().outcome == "answered"
    assert len(live.requests("/call")) == 1


# -- a cycle item interrupted mid-send, under steady callback traffic --------------------------------------------


class CallbackStream:
    """Unrelated delivery reports posted through the receiver, one every few milliseconds, until stopped."""

    def __init__(self, receiver: str) -> None:
        self.url = f"{receiver}/dlr?token={WEBHOOK_TOKEN}"
        self.stop = threading.Event()
        self.posted = 0
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self) -> None:
        with requests.Session() as http:
            while not self.stop.wait(0.01):
                form = wire.dlr(f"ATXid_unrelated{self.posted}", "Success", f"+2547770{self.posted % 100000:05d}")
                assert http.post(self.url, data=form, timeout=5).status_code == 200
                self.posted += 1

    def __enter__(self) -> CallbackStream:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(10)


def test_interrupted_cycle_item_is_resent_once_under_steady_callback_traffic(
    live, receiver, session, redis_client
) -> None:
    """Under steady traffic some batch is always queued or being applied; a second drainer (this test)
    holding one batch of the stream makes that moment last, so housekeeping sees it at every look. The
    callbacks it waits on were all received after the item's cutoff: they cannot hold its report."""
    from tests.test_interrupted_sends import stuck_item

    phone = "+254766000009"
    item = stuck_item(session, phone, lease_ended=timedelta(minutes=10))
    box = Inbox(redis_client)
    with CallbackStream(receiver) as stream:
        held = wait_for(lambda: box.claim(1), timeout=20, interval=0.001, what="a batch of the stream to hold")
        started = time.monotonic()
        try:

            def cycle_done() -> bool:
                session.expire_all()
                return session.get_one(Cycle, item.cycle_id).state is CycleState.DONE

            wait_for(cycle_done, timeout=45, interval=0.2, what="the interrupted item resent and the cycle done")
            done_after = time.monotonic() - started
            assert box.in_flight() >= 1 and stream.posted > 0  # the inbox was never idle
        finally:
            box.release(held.key)
    sent_to = [r for r in live.requests("/version1/messaging") if phone in r["form"]["to"].split(",")]
    assert len(sent_to) == 1  # sent again once
    session.expire_all()
    assert session.get_one(CycleItem, item.id).state is ItemState.SENT
    print(f"\n[steady traffic] {stream.posted} unrelated DLRs posted; resent once, cycle done {done_after:.1f} s in")
