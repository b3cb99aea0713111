"""The whole loop through real processes: receiver over HTTP, Redis, a Celery worker subprocess,
Postgres, and the AT simulator posting delivery reports and voice callbacks back to the receiver."""

from __future__ import annotations

import json

import pytest
import requests
from sqlalchemy import func, select

from shared.models import Call, Contact, ContactStatus, DlrEvent, IncomingSms, Message, RawCallback
from simulator import wire
from simulator.scenario import Scenario
from tests.conftest import API_TOKEN, AT_VOICE_NUMBER, FIXTURES, WEBHOOK_TOKEN, wait_for

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


def test_send_is_retried_after_at_server_error_and_sent_once(live, receiver, session) -> None:
    phone = "+254755000005"
    live.set_scenario(Scenario.from_dict({"faults": [{"path": "/version1/messaging", "status": 500, "count": 1}]}))
    answer = send(receiver, phone, "retry me")
    wait_for(
        lambda: (m := session.get(Message, answer["id"])) and session.refresh(m) is None and m.send_state == "sent",
        timeout=40,
        what="sent after retry",
    )
    assert len(live.requests("/version1/messaging")) == 2  # the 500, then the one that went out
