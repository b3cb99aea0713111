"""Issue 14 end to end (receiver, Redis, a real Celery worker with beat, Postgres, the AT simulator): a customer
whose phone was off is called, presses 1, and is back on SMS for the next cycle; the call is graded."""

from __future__ import annotations

import requests
from sqlalchemy import select

from shared.models import Contact, ContactStatus, Cycle
from simulator.scenario import Scenario
from tests.conftest import API_TOKEN, wait_for

AUTH = {"Authorization": f"Bearer {API_TOKEN}"}
PHONE_OFF, BLOCKED = "+254711000101", "+254711000102"
SCENARIO = {
    "default": {"dlr": ["Sent", "Success"], "voice": "answered"},
    "numbers": {
        PHONE_OFF: {"dlr": ["Sent", "AbsentSubscriber"], "voice": "answered", "dtmf": "1"},
        BLOCKED: {"dlr": ["Sent", ["Failed", "UserIsInactive"]], "voice": "answered", "dtmf": "1"},
    },
}


def api(receiver: str, method: str, path: str, **kwargs):
    return requests.request(method, f"{receiver}{path}", headers=AUTH, timeout=10, **kwargs)


def run_cycle(receiver: str, session, message: str) -> dict:
    response = api(receiver, "POST", "/api/cycles", json={"message": message})
    assert response.status_code == 202, response.text
    cycle_id = response.json()["id"]

    def done() -> bool:
        session.expire_all()
        return session.get(Cycle, cycle_id).state.value == "done"

    wait_for(done, timeout=60, what=f"cycle {cycle_id} done")
    return api(receiver, "GET", f"/api/cycles/{cycle_id}").json()


def statuses(session) -> dict[str, ContactStatus]:
    session.expire_all()
    return {c.phone: c.status for c in session.scalars(select(Contact))}


def test_acknowledged_call_puts_a_phone_that_was_off_back_on_sms(live, receiver, session) -> None:
    live.set_scenario(Scenario.from_dict(SCENARIO))
    response = api(receiver, "POST", "/api/contacts", json=[{"phone": PHONE_OFF}, {"phone": BLOCKED}])
    assert response.status_code == 200

    run_cycle(receiver, session, "Your bill is ready")
    inactive = {PHONE_OFF: ContactStatus.INACTIVE, BLOCKED: ContactStatus.INACTIVE}
    wait_for(lambda: statuses(session) == inactive, timeout=30, what="delivery reports applied")

    second = run_cycle(receiver, session, "Your bill is due")
    assert second["voice"] == 2
    wait_for(
        lambda: statuses(session) == {PHONE_OFF: ContactStatus.ACTIVE, BLOCKED: ContactStatus.INACTIVE},
        timeout=30,
        what="the acknowledged call applied",
    )
    report = api(receiver, "GET", f"/api/cycles/{second['id']}").json()
    assert report["voice_detail"]["grades"]["acknowledged"] == 2
    assert report["reached"]["contacts"] == 2

    dry = api(receiver, "POST", "/api/cycles", json={"message": "Next", "dry_run": True}).json()
    assert (dry["sms"], dry["voice"]) == (1, 1)  # the phone that was off gets SMS; the deactivated one a call
    assert dry["calls"]["by_reason"] == {"inactive": 1, "pending": 0, "chose_voice": 0}
