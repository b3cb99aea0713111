"""Each customer exactly once when AT acted but its answer is unreadable, or a proxy lies about it.

The whole loop through real processes (receiver, Redis, a Celery worker with beat, Postgres) and the
simulator's outside faults (simulator/scenario.py): AT sends the SMS or places the call, then the
answer is a proxy's 502/504 page, JSON under another Content-Type, a body cut short, or a hang-up.
Every contact must get exactly one SMS or call (counted on the simulator's side), recorded with AT's
own ids, and the cycle must end `done`. Conftest sets UNKNOWN_SEND_GRACE_SECONDS=2.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
import requests
from sqlalchemy import select

from shared.models import Call, Contact, ContactStatus, Cycle, CycleItem, DlrEvent, ItemState, Message
from simulator.scenario import Scenario
from tests.conftest import API_TOKEN, wait_for

pytestmark = pytest.mark.worker

AUTH = {"Authorization": f"Bearer {API_TOKEN}"}
SMS, CALL = "/version1/messaging", "/call"
#: Long enough for a dispatch lease (15 s here), a housekeeping tick (15 s) and the callbacks.
SETTLED = 90

SMS_FAULTS: dict[str, dict[str, Any]] = {
    "accept-then-502": {"status": 502, "acted": True},
    "accept-then-504": {"status": 504, "acted": True},
    "charset": {"content_type": "application/json; charset=utf-8"},
    "truncated": {"truncate": 60},
    "reset": {"status": "reset"},
}
CALL_FAULTS: dict[str, dict[str, Any]] = {
    "accept-then-502": {"status": 502, "acted": True},
    "reset": {"status": "reset"},
}


def phones(prefix: str, count: int) -> list[str]:
    return [f"+2547{prefix}{i:06d}" for i in range(count)]


def with_fault(live, path: str, fault: dict[str, Any], default: dict[str, Any] | None = None) -> None:
    live.set_scenario(Scenario.from_dict({"default": default or {}, "faults": [{"path": path, **fault}]}))


def start_cycle(receiver: str, message: str) -> int:
    response = requests.post(f"{receiver}/api/cycles", json={"message": message}, headers=AUTH, timeout=10)
    assert response.status_code == 202, response.text
    return response.json()["id"]


def per_number(live, path: str) -> Counter[str]:
    """How many times the simulator was asked to send to (or call) each number."""
    return Counter(n for r in live.requests(path) for n in str(r["form"]["to"]).split(","))


def cycle_state(session, cycle_id: int) -> str:
    session.expire_all()
    return session.get_one(Cycle, cycle_id).state.value


def all_active(session, numbers: list[str]) -> bool:
    session.expire_all()
    statuses = dict(session.execute(select(Contact.phone, Contact.status)).all())
    return all(statuses.get(n) is ContactStatus.ACTIVE for n in numbers)


@pytest.mark.parametrize("fault", list(SMS_FAULTS))
def test_sms_cycle_sends_each_contact_once_whatever_the_answer(live, receiver, session, fault: str) -> None:
    numbers = phones(f"{list(SMS_FAULTS).index(fault) + 1}1", 5)
    session.add_all(Contact(phone=n, status=ContactStatus.NEW) for n in numbers)
    session.commit()
    with_fault(live, SMS, SMS_FAULTS[fault])

    cycle_id = start_cycle(receiver, f"Your bill ({fault})")
    wait_for(lambda: cycle_state(session, cycle_id) == "done", timeout=SETTLED, what="the cycle done")
    wait_for(lambda: all_active(session, numbers), timeout=SETTLED, what="every report applied")

    assert per_number(live, SMS) == Counter({n: 1 for n in numbers})  # exactly one SMS each
    messages = session.scalars(select(Message).where(Message.cycle_id == cycle_id)).all()
    assert sorted(m.phone for m in messages) == numbers
    assert all(m.send_state == "sent" and m.status == "Success" for m in messages)
    reported = {cb["form"]["id"] for cb in live.callbacks("dlr")}
    assert {m.at_message_id for m in messages} == reported  # AT's own ids, matched to their reports
    unmatched = session.scalars(select(DlrEvent).where(DlrEvent.at_message_id.not_in(reported))).all()
    assert unmatched == []
    assert set(session.scalars(select(CycleItem.state).where(CycleItem.cycle_id == cycle_id))) == {ItemState.SENT}


def test_a_readable_answer_under_another_content_type_is_recorded_at_once(live, receiver, session) -> None:
    """Not paused, not left for reconciliation: AT's JSON is AT's JSON whatever its charset."""
    numbers = phones("91", 3)
    session.add_all(Contact(phone=n, status=ContactStatus.NEW) for n in numbers)
    session.commit()
    with_fault(live, SMS, SMS_FAULTS["charset"], default={"dlr": []})  # no reports: only the answer can tell

    cycle_id = start_cycle(receiver, "charset")
    wait_for(lambda: cycle_state(session, cycle_id) == "done", timeout=30, what="the cycle done")
    messages = session.scalars(select(Message).where(Message.cycle_id == cycle_id)).all()
    assert {(m.send_state, m.send_status_code) for m in messages} == {("sent", 102)}
    assert all(m.at_message_id and m.at_message_id.startswith("ATXid_") for m in messages)
    assert per_number(live, SMS) == Counter({n: 1 for n in numbers})


@pytest.mark.parametrize("fault", list(CALL_FAULTS))
def test_call_cycle_calls_each_contact_once_whatever_the_answer(live, receiver, session, fault: str) -> None:
    numbers = phones(f"{list(CALL_FAULTS).index(fault) + 1}2", 3)
    session.add_all(Contact(phone=n, status=ContactStatus.INACTIVE) for n in numbers)  # so the cycle calls
    session.commit()
    with_fault(live, CALL, {**CALL_FAULTS[fault], "count": 10}, default={"voice": "answered"})

    cycle_id = start_cycle(receiver, f"Please call back ({fault})")
    wait_for(lambda: cycle_state(session, cycle_id) == "done", timeout=SETTLED, what="the cycle done")

    assert per_number(live, CALL) == Counter({n: 1 for n in numbers})  # exactly one call each
    calls = session.scalars(select(Call).where(Call.cycle_id == cycle_id)).all()
    assert sorted(c.phone for c in calls) == numbers
    # Adopted from AT's callbacks: its session, its outcome, and that it was placed (the report counts it).
    assert {c.outcome for c in calls} == {"answered"}
    assert all(c.session_id and c.session_id.startswith("ATVId_") for c in calls)
    assert {c.send_state for c in calls} == {"sent"}
    assert set(session.scalars(select(CycleItem.state).where(CycleItem.cycle_id == cycle_id))) == {ItemState.DONE}
    report = requests.get(f"{receiver}/api/cycles/{cycle_id}", headers=AUTH, timeout=5).json()
    assert report["voice"] == 3 and report["voice_detail"]["called"] == 3


def communicate(receiver: str, to: str, message: str) -> dict[str, Any]:
    response = requests.post(f"{receiver}/communicate", json={"to": to, "message": message}, headers=AUTH, timeout=5)
    assert response.status_code == 202, response.text
    return response.json()


def test_one_off_sms_with_accept_then_502_is_sent_once(live, receiver, session) -> None:
    [phone] = phones("81", 1)
    with_fault(live, SMS, SMS_FAULTS["accept-then-502"])
    message_id = communicate(receiver, phone, "one-off")["id"]

    def message() -> Message:
        session.expire_all()
        return session.get_one(Message, message_id)

    wait_for(lambda: message().send_state == "sent", timeout=SETTLED, what="the send adopted")
    wait_for(lambda: all_active(session, [phone]), timeout=30, what="its reports applied")
    assert message().at_message_id == live.callbacks("dlr")[0]["form"]["id"]
    assert per_number(live, SMS) == Counter({phone: 1})


def test_one_off_call_with_accept_then_502_is_placed_once(live, receiver, session) -> None:
    [phone] = phones("82", 1)
    session.add(Contact(phone=phone, status=ContactStatus.INACTIVE))  # so /communicate calls
    session.commit()
    with_fault(live, CALL, CALL_FAULTS["accept-then-502"], default={"voice": "answered"})
    answer = communicate(receiver, phone, "one-off call")
    assert answer["channel"] == "voice"

    def call() -> Call:
        session.expire_all()
        return session.get_one(Call, answer["id"])

    wait_for(lambda: call().send_state == "sent" and call().ended_at, timeout=SETTLED, what="the call adopted")
    assert call().outcome == "answered"
    assert per_number(live, CALL) == Counter({phone: 1})


def test_an_answer_lost_twice_is_not_sent_a_third_time(live, receiver, session) -> None:
    """A proxy page with nothing behind it (AT did not act, or acted and sent no report) on every request:
    the item is sent again once after the grace, then given up, recorded failed with why, instead of an
    SMS every few seconds to a customer AT may be reaching each time."""
    [number] = phones("95", 1)
    session.add(Contact(phone=number, status=ContactStatus.NEW))
    session.commit()
    with_fault(live, SMS, {"status": 502, "count": 50}, default={"dlr": []})

    cycle_id = start_cycle(receiver, "lost twice")
    wait_for(lambda: cycle_state(session, cycle_id) == "done", timeout=SETTLED, what="the cycle done")

    assert per_number(live, SMS) == Counter({number: 2})  # the first try and one resend, no more
    [item] = session.scalars(select(CycleItem).where(CycleItem.cycle_id == cycle_id)).all()
    assert item.state is ItemState.FAILED and "not sent again" in (item.error or "")
    attempts = session.scalars(select(Message).where(Message.cycle_id == cycle_id).order_by(Message.id)).all()
    assert [m.send_state for m in attempts] == ["unanswered", "unanswered"]  # a late report still adopts them


def test_a_one_off_send_whose_answer_is_lost_twice_is_not_sent_a_third_time(live, receiver, session) -> None:
    number = "+254796000001"
    with_fault(live, SMS, {"status": 502, "count": 50}, default={"dlr": []})
    response = requests.post(
        f"{receiver}/communicate", json={"to": number, "message": "lost twice"}, headers=AUTH, timeout=10
    )
    assert response.status_code == 202, response.text
    message_id = response.json()["id"]

    def given_up() -> bool:
        session.expire_all()
        return session.get_one(Message, message_id).send_state == "unanswered"

    wait_for(given_up, timeout=SETTLED, what="the send given up after its second lost answer")
    assert "not sent again" in (session.get_one(Message, message_id).send_error or "")
    assert per_number(live, SMS) == Counter({number: 2})
