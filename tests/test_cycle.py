"""Communication cycles end to end: receiver, Redis, a real Celery worker with beat, Postgres and the
AT simulator (the rules one by one are in test_cycle_rules.py)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import requests
from sqlalchemy import func, select

from shared import schedules
from shared.models import (
    Call,
    Channel,
    Contact,
    ContactStatus,
    Cycle,
    Message,
)
from simulator.scenario import Scenario
from tests.conftest import API_TOKEN, wait_for

AUTH = {"Authorization": f"Bearer {API_TOKEN}"}

A, B, C, D, E, F = (f"+25471100000{i}" for i in range(1, 7))
STORY = {
    "default": {"dlr": ["Sent", "Success"], "voice": "answered"},
    "numbers": {
        A: {"dlr": ["Sent", "Success"]},
        B: {"dlr": ["Sent", "Success"]},
        C: {"dlr": ["Sent", ["Failed", "UserIsInactive"]], "voice": "answered", "dtmf": "1"},
        D: {"dlr": ["Sent", "Rejected"], "voice": "USER_BUSY"},
        E: {"dlr": ["Sent", "AbsentSubscriber"], "voice": "NO_ANSWER"},
        F: {"dlr": ["Buffered"], "voice": "answered"},
    },
}


def api(receiver: str, method: str, path: str, **kwargs):
    return requests.request(method, f"{receiver}{path}", headers=AUTH, timeout=10, **kwargs)


def start(receiver: str, message: str, voice_message: str | None = None) -> int:
    response = api(receiver, "POST", "/api/cycles", json={"message": message, "voice_message": voice_message})
    assert response.status_code == 202, response.text
    return response.json()["id"]


def state_of(session, cycle_id: int) -> str:
    session.expire_all()
    return session.get(Cycle, cycle_id).state.value


def statuses(session) -> dict[str, ContactStatus]:
    session.expire_all()
    return {c.phone: c.status for c in session.scalars(select(Contact))}


def add_contacts(receiver: str, phones: list[str]) -> None:
    response = api(receiver, "POST", "/api/contacts", json=[{"phone": p} for p in phones])
    assert response.status_code == 200 and response.json()["created"] == len(phones)


def test_seed_story_two_cycles(live, receiver, session) -> None:
    """Cycle 1: SMS to six new contacts; cycle 2: SMS to the two delivered, one call to each of the others."""
    live.set_scenario(Scenario.from_dict(STORY))
    add_contacts(receiver, [A, B, C, D, E, F])

    first = start(receiver, "Your bill is ready")
    wait_for(lambda: state_of(session, first) == "done", timeout=30, what="cycle 1 done")
    expected_after_first = {
        A: ContactStatus.ACTIVE,
        B: ContactStatus.ACTIVE,
        C: ContactStatus.INACTIVE,
        D: ContactStatus.INACTIVE,
        E: ContactStatus.INACTIVE,
        F: ContactStatus.PENDING,  # only Buffered: no final report yet
    }
    wait_for(lambda: statuses(session) == expected_after_first, timeout=30, what="delivery reports applied")
    assert len(live.requests("/version1/messaging")) == 1  # six recipients, one batched request

    second = start(receiver, "Your bill is due", "This is a reminder that your bill is due")
    wait_for(lambda: state_of(session, second) == "done", timeout=60, what="cycle 2 done")
    session.expire_all()
    sms_to = sorted(m.phone for m in session.scalars(select(Message).where(Message.cycle_id == second)))
    assert sms_to == [A, B]
    calls = {c.phone: c for c in session.scalars(select(Call).where(Call.cycle_id == second))}
    assert sorted(calls) == [C, D, E, F]
    assert [r["form"]["to"] for r in live.requests("/call")].count(C) == 1  # each exactly once
    assert len(live.requests("/call")) == 4
    assert (calls[C].outcome, calls[C].acknowledged) == ("answered", True)
    assert (calls[D].hangup_cause, calls[D].outcome) == ("USER_BUSY", "retry_later")
    assert (calls[E].hangup_cause, calls[E].outcome) == ("NO_ANSWER", "retry_later")
    assert calls[F].outcome == "answered"

    report = api(receiver, "GET", f"/api/cycles/{second}").json()
    assert report["state"] == "done"
    assert report["sms_detail"]["sent"] == 2
    assert report["voice_detail"]["called"] == 4 and report["voice_detail"]["answered"] == 2
    assert report["voice_detail"]["acknowledged"] == 1
    assert report["voice_detail"]["not_answered"] == {"USER_BUSY": 1, "NO_ANSWER": 1}
    assert report["cost"]["currency"] == "KES" and Decimal(report["cost"]["amount"]) > 0  # SMS and calls were paid for
    wait_for(lambda: api(receiver, "GET", f"/api/cycles/{second}").json()["sms_detail"]["delivered"] == 2, timeout=20)


def test_dry_run_counts_and_sends_nothing(live, receiver, session) -> None:
    session.add_all(
        [
            Contact(phone=A, status=ContactStatus.NEW),
            Contact(phone=B, status=ContactStatus.ACTIVE),
            Contact(phone=C, status=ContactStatus.INACTIVE),
            Contact(phone=D, status=ContactStatus.PENDING),
            Contact(phone=E, status=ContactStatus.OPTED_OUT),
            Contact(phone=F, status=ContactStatus.INVALID),
            Contact(phone="+254711000007", status=ContactStatus.NEW, channel_preference=Channel.VOICE),
        ]
    )
    session.commit()
    response = api(receiver, "POST", "/api/cycles", json={"message": "hello", "dry_run": True})
    assert response.status_code == 200
    assert response.json() == {
        "sms": 2,
        "voice": 3,
        "skipped": 2,
        "skipped_by_status": {"opted_out": 1, "invalid": 1},
        "segments": {"encoding": "GSM-7", "parts": 1},
        "estimated_cost": {"currency": "KES", "amount": "10.60"},
        "calls": {
            "contacts": 3,
            "by_reason": {"inactive": 1, "pending": 1, "chose_voice": 1},
            "estimated_cost": {"currency": "KES", "amount": "9.00"},
        },
    }
    assert session.scalar(select(func.count()).select_from(Cycle)) == 0
    assert live.requests() == []


def test_insufficient_balance_pauses_and_resume_completes(live, receiver, session) -> None:
    live.set_scenario(Scenario.from_dict({"numbers": {"*": {"send_status": 405}}}))
    add_contacts(receiver, [A, B, C])
    cycle_id = start(receiver, "hello")
    wait_for(lambda: state_of(session, cycle_id) == "paused", timeout=30, what="paused")
    report = api(receiver, "GET", f"/api/cycles/{cycle_id}").json()
    assert "InsufficientBalance" in report["paused_reason"] and report["paused_by"] == "account"
    assert set(statuses(session).values()) == {ContactStatus.NEW}  # contacts untouched
    assert report["sms_detail"]["items"]["pending"] == 3

    live.set_scenario(Scenario.from_dict({}))  # the account was topped up
    response = api(receiver, "POST", f"/api/cycles/{cycle_id}/resume")
    assert response.status_code == 200 and response.json()["state"] == "dispatching"
    wait_for(lambda: state_of(session, cycle_id) == "done", timeout=30, what="done after resume")
    wait_for(lambda: set(statuses(session).values()) == {ContactStatus.ACTIVE}, timeout=30)
    assert len(live.requests("/version1/messaging")) == 2  # refused for the balance, then sent
    session.expire_all()
    sent = session.execute(
        select(Message.phone, func.count()).where(Message.send_state == "sent").group_by(Message.phone)
    ).all()
    assert dict(sent) == {A: 1, B: 1, C: 1}
    assert api(receiver, "POST", f"/api/cycles/{cycle_id}/resume").status_code == 409  # not paused now


def test_scheduled_cycle_is_started_by_beat(live, receiver, session) -> None:
    live.set_scenario(Scenario.from_dict({}))
    add_contacts(receiver, [A])
    schedule = schedules.add_schedule(session, "every minute", "* * * * *", "Scheduled hello")
    schedule.created_at = datetime.now(UTC) - timedelta(minutes=5)  # so this minute's period is due
    session.commit()
    wait_for(lambda: session.scalar(select(func.count()).select_from(Cycle)) >= 1, timeout=30, what="beat")
    cycle = session.scalars(select(Cycle)).one()
    assert cycle.schedule_id == schedule.id and cycle.period_key.startswith(f"schedule:{schedule.id}:")
    wait_for(lambda: state_of(session, cycle.id) == "done", timeout=30)
