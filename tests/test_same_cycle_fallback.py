"""`fallback: "same_cycle"` (design §4.1, issue 14): a contact whose SMS of this cycle failed, or got no
`Success` FALLBACK_AFTER_SECONDS after AT took it, is called in this same cycle, once.

End to end: the receiver, a real worker with beat, Postgres and the simulator. This module's worker runs
with FALLBACK_AFTER_SECONDS=8: long enough that a call placed at once after a failure report is told apart
from one placed at the deadline, short enough to wait for.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from sqlalchemy import select

from shared.models import Call, Cycle, CycleItem, Message
from shared.settings import SettingsError, load_settings
from simulator.scenario import Scenario
from tests.conftest import API_TOKEN, wait_for
from tests.services import WorkerProcess

AUTH = {"Authorization": f"Bearer {API_TOKEN}"}
FALLBACK_AFTER = 8
A, B, C, D = (f"+25471300000{i}" for i in range(1, 5))
VOICE = "Hello {name}, your bill is ready"


@pytest.fixture(scope="module")
def worker(environment: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[WorkerProcess]:
    """This module's worker: same-cycle fallbacks wait FALLBACK_AFTER seconds for a `Success`."""
    env = {**os.environ, "FALLBACK_AFTER_SECONDS": str(FALLBACK_AFTER)}
    process = WorkerProcess(tmp_path_factory.mktemp("worker"), "fallback", env)
    yield process
    process.stop()


def api(receiver: str, method: str, path: str, **kwargs: Any) -> requests.Response:
    return requests.request(method, f"{receiver}{path}", headers=AUTH, timeout=10, **kwargs)


def add_contacts(receiver: str, people: dict[str, str]) -> None:
    response = api(receiver, "POST", "/api/contacts", json=[{"phone": p, "name": n} for p, n in people.items()])
    assert response.status_code == 200 and response.json()["created"] == len(people), response.text


def start(receiver: str, **fields: Any) -> int:
    body = {"message": "Your bill is ready", "voice_message": VOICE, **fields}
    response = api(receiver, "POST", "/api/cycles", json=body)
    assert response.status_code == 202, response.text
    return response.json()["id"]


def state_of(session: Any, cycle_id: int) -> str:
    session.expire_all()
    return session.get(Cycle, cycle_id).state.value


def calls_of(session: Any, cycle_id: int) -> dict[str, Call]:
    session.expire_all()
    return {c.phone: c for c in session.scalars(select(Call).where(Call.cycle_id == cycle_id))}


def sms_of(session: Any, cycle_id: int) -> dict[str, Message]:
    session.expire_all()
    return {m.phone: m for m in session.scalars(select(Message).where(Message.cycle_id == cycle_id))}


def called(live: Any) -> list[str]:
    return [r["form"]["to"] for r in live.requests("/call")]


def report(receiver: str, cycle_id: int) -> dict[str, Any]:
    response = api(receiver, "GET", f"/api/cycles/{cycle_id}")
    assert response.status_code == 200, response.text
    return response.json()


def test_failed_report_is_called_at_once_in_the_same_cycle(live, receiver, session) -> None:
    live.set_scenario(
        Scenario.from_dict(
            {
                "default": {"dlr": ["Sent", "Success"], "voice": "answered"},
                "numbers": {B: {"dlr": ["Sent", ["Failed", "UserIsInactive"]]}},
            }
        )
    )
    add_contacts(receiver, {A: "Amina", B: "Baraka"})
    cycle_id = start(receiver, fallback="same_cycle")
    wait_for(lambda: state_of(session, cycle_id) == "done", timeout=40, what="cycle done")
    calls = calls_of(session, cycle_id)
    assert sorted(calls) == [B] and called(live) == [B]
    assert calls[B].message == "Hello Baraka, your bill is ready"  # this cycle's voice text, filled in
    assert calls[B].outcome == "answered"
    sms = sms_of(session, cycle_id)
    assert sorted(sms) == [A, B] and sms[B].status == "Failed"
    # At once: the failure report, not the deadline, placed the call.
    assert (calls[B].created_at - sms[B].created_at).total_seconds() < FALLBACK_AFTER
    answer = report(receiver, cycle_id)
    assert (answer["sms"], answer["voice"]) == (2, 0)  # the contract's counts stay what was planned
    assert answer["fallback"]["mode"] == "same_cycle"
    assert answer["fallback"]["calls"] == 1 and answer["fallback"]["waiting"] == 0
    assert answer["voice_detail"]["called"] == 1


def test_a_number_sms_cannot_route_to_is_called_at_once(live, receiver, session) -> None:
    """407 CouldNotRoute: AT refuses the SMS, and the status policy says a call may reach them."""
    live.set_scenario(
        Scenario.from_dict({"default": {"dlr": ["Sent", "Success"]}, "numbers": {B: {"send_status": 407}}})
    )
    add_contacts(receiver, {A: "Amina", B: "Baraka"})
    cycle_id = start(receiver, fallback="same_cycle")
    wait_for(lambda: state_of(session, cycle_id) == "done", timeout=40, what="cycle done")
    assert called(live) == [B] and calls_of(session, cycle_id)[B].message == "Hello Baraka, your bill is ready"
    assert sms_of(session, cycle_id)[B].send_state == "failed"
    assert report(receiver, cycle_id)["fallback"]["calls"] == 1


def test_no_report_is_called_after_fallback_after_seconds(live, receiver, session) -> None:
    live.set_scenario(
        Scenario.from_dict(
            {
                "default": {"dlr": ["Sent", "Success"], "voice": "answered"},
                "numbers": {C: {"dlr": ["Sent", "Buffered"]}, D: {"dlr": []}},
            }
        )
    )
    add_contacts(receiver, {A: "Amina", C: "Chebet", D: ""})
    cycle_id = start(receiver, fallback="same_cycle")
    wait_for(lambda: len(sms_of(session, cycle_id)) == 3, timeout=20, what="SMS sent")
    wait_for(lambda: live.wait_idle(5), timeout=10, what="reports posted")
    # Sent, no `Success` yet: the cycle is not done.
    wait_for(lambda: report(receiver, cycle_id)["fallback"]["waiting"] == 2, timeout=5, what="A's Success applied")
    assert state_of(session, cycle_id) == "dispatching"  # nobody called before the deadline: asserted below
    wait_for(lambda: state_of(session, cycle_id) == "done", timeout=FALLBACK_AFTER + 30, what="cycle done")
    calls = calls_of(session, cycle_id)
    assert sorted(calls) == [C, D] and sorted(called(live)) == [C, D]
    sms = sms_of(session, cycle_id)
    for phone in (C, D):
        waited = (calls[phone].created_at - sms[phone].created_at).total_seconds()
        assert waited >= FALLBACK_AFTER, (phone, waited)
    assert calls[D].message == "Hello, your bill is ready"  # no name: `{name}` removed cleanly
    assert report(receiver, cycle_id)["fallback"]["calls"] == 2


def test_success_before_the_deadline_means_no_call(live, receiver, session) -> None:
    live.set_scenario(Scenario.from_dict({"default": {"dlr": ["Sent", "Success"], "voice": "answered", "delay": 1}}))
    add_contacts(receiver, {A: "Amina", B: "Baraka"})
    cycle_id = start(receiver, fallback="same_cycle")
    wait_for(lambda: state_of(session, cycle_id) == "done", timeout=FALLBACK_AFTER + 30, what="cycle done")
    assert {m.status for m in sms_of(session, cycle_id).values()} == {"Success"}
    assert calls_of(session, cycle_id) == {} and called(live) == []
    answer = report(receiver, cycle_id)
    assert (answer["fallback"]["waiting"], answer["fallback"]["calls"]) == (0, 0)


def test_next_cycle_default_calls_nobody_in_this_cycle(live, receiver, session) -> None:
    live.set_scenario(
        Scenario.from_dict(
            {
                "default": {"dlr": ["Sent", "Success"], "voice": "answered"},
                "numbers": {
                    B: {"dlr": ["Sent", ["Failed", "UserIsInactive"]]},
                    C: {"dlr": []},
                    D: {"send_status": 407},
                },
            }
        )
    )
    add_contacts(receiver, {A: "Amina", B: "Baraka", C: "Chebet", D: "Daudi"})
    cycle_id = start(receiver)
    wait_for(lambda: state_of(session, cycle_id) == "done", timeout=FALLBACK_AFTER, what="done without waiting")
    wait_for(lambda: live.wait_idle(5), timeout=10, what="reports posted")
    wait_for(lambda: sms_of(session, cycle_id)[B].status == "Failed", timeout=10, what="failure applied")
    assert calls_of(session, cycle_id) == {} and called(live) == []
    answer = report(receiver, cycle_id)
    assert answer["fallback"]["mode"] == "next_cycle" and answer["fallback"]["calls"] == 0
    session.expire_all()
    assert session.scalars(select(CycleItem.fallback_at).where(CycleItem.cycle_id == cycle_id)).all() == [None] * 4


def test_duplicate_failure_reports_place_one_call(live, receiver, session) -> None:
    live.set_scenario(
        Scenario.from_dict(
            {
                "default": {"dlr": ["Sent", "Success"], "voice": "answered"},
                "numbers": {
                    B: {"dlr": [["Failed", "UserIsInactive"], "Rejected", "Expired"], "duplicates": 3},
                },
            }
        )
    )
    add_contacts(receiver, {A: "Amina", B: "Baraka"})
    cycle_id = start(receiver, fallback="same_cycle")
    wait_for(lambda: state_of(session, cycle_id) == "done", timeout=40, what="cycle done")
    wait_for(lambda: live.wait_idle(5), timeout=10, what="reports posted")
    assert len([c for c in live.callbacks("dlr") if c["form"]["phoneNumber"] == B]) >= 9
    assert called(live) == [B]
    assert list(calls_of(session, cycle_id)) == [B]


# -- the request and the setting ----------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["sometimes", "SAME_CYCLE", "", 1, True, ["same_cycle"]])
def test_a_bad_fallback_is_a_400_naming_the_field(client, operator_headers, value) -> None:
    response = client.post("/api/cycles", json={"message": "hello", "fallback": value}, headers=operator_headers)
    assert response.status_code == 400
    assert "fallback" in response.get_json()["error"]


def test_dry_run_takes_the_fallback(client, operator_headers) -> None:
    body = {"message": "hello", "dry_run": True, "fallback": "same_cycle"}
    response = client.post("/api/cycles", json=body, headers=operator_headers)
    assert response.status_code == 200, response.get_json()
    assert response.get_json()["sms"] == 0


@pytest.mark.parametrize("raw", ["0", "-5", "1.5", "soon", "604801"])
def test_fallback_after_seconds_is_a_whole_number_above_zero(raw) -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings(fallback_after_seconds=raw)
    assert "FALLBACK_AFTER_SECONDS" in str(caught.value)


def test_fallback_after_seconds_default() -> None:
    assert load_settings().fallback_after_seconds == 900
