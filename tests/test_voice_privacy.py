"""Who hears a customer's message on a live call (issue 12): only the call Reach placed to that customer,
found by the sessionId AT returned from `/call` and the customer's number. A made-up session, an inbound
call, a placed session posted with another number: the neutral greeting (VOICE_GREETING), never "the last
message for this number". Reach's own calls, including one the customer picks up before AT's answer to
`/call` reached the worker, still hear their message.

The end-to-end cases run the receiver, a Celery worker and the simulator, so the store holds exactly what
the worker records when it places a call.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from typing import Any

import pytest
import requests
from sqlalchemy import select

from shared import voice_script
from shared.models import Call, Contact, ContactStatus, Cycle
from simulator import wire
from simulator.scenario import Scenario
from tests.conftest import API_TOKEN, AT_VOICE_NUMBER, WEBHOOK_TOKEN, wait_for

AUTH = {"Authorization": f"Bearer {API_TOKEN}"}
CUSTOMER = "+254733000011"
OTHER = "+254733000012"
SECRET = "Your loan of KES 50,000 is overdue; pay by Friday."


def said(response: Any) -> list[str]:
    """What AT would speak from a live answer."""
    assert response.status_code == 200, response.text if hasattr(response, "text") else response.get_data()
    body = response.content if hasattr(response, "content") else response.get_data()
    return [say.text or "" for say in ET.fromstring(body).iter("Say")]


def greeting() -> str:
    from shared.settings import load_settings

    return load_settings().voice_greeting


def call_customer(receiver: str, session: Any, phone: str, message: str) -> Call:
    """An operator's one-off send to an inactive contact: the worker places a call through the simulator."""
    session.add(Contact(phone=phone, status=ContactStatus.INACTIVE))
    session.commit()
    answer = requests.post(f"{receiver}/communicate", json={"to": phone, "message": message}, headers=AUTH, timeout=5)
    assert answer.status_code == 202 and answer.json()["channel"] == "voice", answer.text

    def ended() -> Call | None:
        session.expire_all()
        call = session.get(Call, answer.json()["id"])
        return call if call is not None and call.ended_at is not None else None

    return wait_for(ended, timeout=30, what="the call placed and ended")


def post_live(receiver: str, path: str, session_id: str, caller: str, direction: str) -> requests.Response:
    body = wire.voice_active(session_id, caller, AT_VOICE_NUMBER, direction=direction)
    return requests.post(f"{receiver}{path}?token={WEBHOOK_TOKEN}", data=body, timeout=10)


# -- the attack and the inbound call, against what the worker really records ----------------------------------


@pytest.mark.worker
def test_a_made_up_session_with_a_customers_number_hears_no_message(live: Any, receiver: str, session: Any) -> None:
    """The review's attack: anyone with the webhook token posts a live callback with a session of their own
    and a customer's number, on /voice and on the seed's /communicate, claiming either direction."""
    live.set_scenario(Scenario.from_dict({"default": {"voice": "answered"}}))
    call_customer(receiver, session, CUSTOMER, SECRET)
    for path in ("/voice", "/communicate"):
        for direction in ("Inbound", "Outbound"):
            response = post_live(receiver, path, wire.new_session_id(), CUSTOMER, direction)
            assert SECRET not in response.text, (path, direction)
            assert said(response) == [greeting()], (path, direction)


@pytest.mark.worker
def test_an_inbound_call_from_a_customers_real_number_hears_no_message(live: Any, receiver: str, session: Any) -> None:
    """A customer (or anyone spoofing their caller id) calls our AT number after Reach called them: AT
    posts an inbound session of its own. It hears the greeting, not the message of Reach's call."""
    live.set_scenario(Scenario.from_dict({"default": {"voice": "answered"}}))
    placed = call_customer(receiver, session, CUSTOMER, SECRET)
    inbound = post_live(receiver, "/voice", wire.new_session_id(), CUSTOMER, "Inbound")
    assert SECRET not in inbound.text
    assert said(inbound) == [greeting()]
    # Even AT's own session id of Reach's call is not spoken on an inbound leg.
    assert SECRET not in post_live(receiver, "/voice", placed.session_id, CUSTOMER, "Inbound").text


# -- Reach's own calls still hear their message ---------------------------------------------------------------


def live_answers(simulator: Any, phone: str) -> list[dict[str, Any]]:
    """The simulator's record of each live callback it posted for `phone` and what it heard back."""
    return [
        cb
        for cb in simulator.callbacks("voice")
        if cb["form"]["callerNumber"] == phone and cb["form"]["isActive"] == "1" and "dtmfDigits" not in cb["form"]
    ]


@pytest.mark.worker
def test_a_cycle_call_through_the_simulator_hears_its_message(live: Any, receiver: str, session: Any) -> None:
    live.set_scenario(Scenario.from_dict({"default": {"voice": "answered", "dtmf": "1"}}))
    session.add(Contact(phone=CUSTOMER, status=ContactStatus.INACTIVE))
    session.commit()
    body = {"message": "Your bill is ready", "voice_message": SECRET}
    started = requests.post(f"{receiver}/api/cycles", json=body, headers=AUTH, timeout=10)
    assert started.status_code == 202, started.text

    def done() -> bool:
        session.expire_all()
        return session.get_one(Cycle, started.json()["id"]).state.value == "done"

    wait_for(done, timeout=30, what="the cycle done")
    wait_for(lambda: live_answers(live, CUSTOMER), timeout=20, what="the live callback answered")
    assert live_answers(live, CUSTOMER)[0]["said"] == [SECRET, voice_script.CONFIRM_PROMPT]
    session.expire_all()
    call = session.scalars(select(Call).where(Call.cycle_id == started.json()["id"])).one()
    wait_for(lambda: session.refresh(call) is None and call.acknowledged, timeout=20, what="the key press applied")


@pytest.mark.worker
def test_a_call_picked_up_before_ats_answer_reached_reach_hears_its_message(
    live: Any, receiver: str, session: Any
) -> None:
    """AT rings the customer, who answers, while its answer to `/call` is still on its way to the worker
    (the simulator's `late` fault holds it 1 s): the live callback comes before Reach knows the sessionId.
    The receiver waits for the worker to record it instead of answering with the greeting."""
    faults = [{"path": "/call", "status": "late", "count": 1}]
    live.set_scenario(Scenario.from_dict({"default": {"voice": "answered"}, "faults": faults, "timeout_seconds": 1}))
    call = call_customer(receiver, session, CUSTOMER, SECRET)
    answers = live_answers(live, CUSTOMER)
    assert len(answers) == 1 and answers[0]["said"][0] == SECRET
    assert answers[0]["time"] < live.requests("/call")[0]["time"] + 1  # posted before AT's answer was written
    # The worker had AT's answer: the call is recorded placed, under AT's sessionId.
    wait_for(lambda: session.refresh(call) is None and call.send_state == "sent", timeout=10, what="recorded sent")
    assert call.session_id == answers[0]["form"]["sessionId"] and call.send_error is None


# -- the check itself, on the receiver alone -------------------------------------------------------------------


def test_a_placed_session_posted_with_another_number_hears_no_message(client: Any, redis_client: Any) -> None:
    """A sessionId is AT's, for one customer: with another callerNumber it is not that customer's call."""
    session_id = wire.new_session_id()
    voice_script.remember(redis_client, SECRET, phone=CUSTOMER, session_id=session_id)
    body = wire.voice_active(session_id, OTHER, AT_VOICE_NUMBER)
    response = client.post(f"/voice?token={WEBHOOK_TOKEN}", data=body)
    assert SECRET not in response.get_data(as_text=True)
    assert said(response) == [greeting()]
    # The customer's own leg of that call does hear it.
    mine = client.post(f"/voice?token={WEBHOOK_TOKEN}", data=wire.voice_active(session_id, CUSTOMER, AT_VOICE_NUMBER))
    assert said(mine) == [SECRET, voice_script.CONFIRM_PROMPT]


def test_the_greeting_is_configurable_and_asks_for_nothing(make_app: Any) -> None:
    client = make_app(voice_greeting="Welcome to Acme. Goodbye.").test_client()
    body = wire.voice_active(wire.new_session_id(), CUSTOMER, AT_VOICE_NUMBER, direction="Inbound")
    response = client.post(f"/voice?token={WEBHOOK_TOKEN}", data=body)
    assert said(response) == ["Welcome to Acme. Goodbye."]
    assert b"GetDigits" not in response.get_data()  # nothing to confirm: no message was given


def test_a_number_being_called_waits_for_its_session_and_no_other_waits(redis_client: Any) -> None:
    """The receiver's side of the race, on the real store: a live callback for a number the worker is
    calling waits until the worker records AT's sessionId (here 0.3 s later); any other unknown session
    is answered at once, so posting made-up sessions never holds the receiver."""
    import threading
    import time

    from shared import live_calls
    from shared.store import RedisStore

    store = RedisStore(redis_client)
    session_id = wire.new_session_id()
    started = time.monotonic()
    assert live_calls.placed_message(store, session_id=wire.new_session_id(), phone=CUSTOMER) is None
    assert time.monotonic() - started < 0.5

    def worker_gets_ats_answer() -> None:
        time.sleep(0.3)
        store.remember_script(SECRET, phone=CUSTOMER, session_id=session_id)

    with live_calls.placing(store, CUSTOMER):
        recorder = threading.Thread(target=worker_gets_ats_answer)
        recorder.start()
        assert live_calls.placed_message(store, session_id=session_id, phone=CUSTOMER) == SECRET
        recorder.join()
        started = time.monotonic()  # a made-up session for the number being called waits, then gives up
        assert live_calls.placed_message(store, session_id=wire.new_session_id(), phone=CUSTOMER, wait=0.2) is None
        assert 0.2 <= time.monotonic() - started < 1
    assert not store.is_marked(voice_script.placing_key(CUSTOMER))  # cleared when the request is over


@pytest.fixture(params=["redis", "embedded"])
def store(request: pytest.FixtureRequest, tmp_path: Any) -> Any:
    """Each store the worker records calls in: Redis, and the embedded mode's SQLite database."""
    from shared import migrate
    from shared.db import build_engine
    from shared.store import RedisStore, SqlStore

    if request.param == "redis":
        return RedisStore(request.getfixturevalue("redis_client"))
    url = f"sqlite:///{tmp_path / 'reach.sqlite3'}"
    migrate.upgrade(url)
    return SqlStore(build_engine(url))


def test_two_calls_to_one_number_keep_it_marked_until_both_requests_are_over(store: Any) -> None:
    """A cycle's call and an operator's one-off to the same number, their `/call` requests overlapping: the
    first to finish must not clear the mark the second's early callback waits on (it would hear the greeting
    instead of its message)."""
    from shared import live_calls

    key = voice_script.placing_key(CUSTOMER)
    first, second = live_calls.placing(store, CUSTOMER), live_calls.placing(store, CUSTOMER)
    first.__enter__()
    second.__enter__()
    first.__exit__(None, None, None)
    assert store.is_marked(key)  # the second request is still out
    second.__exit__(None, None, None)
    assert not store.is_marked(key)
    with live_calls.placing(store, CUSTOMER):  # a later call marks it afresh
        assert store.is_marked(key)
    assert not store.is_marked(key)


@pytest.mark.parametrize(
    ("value", "message"),
    [("", "must not be empty"), ("   ", "must not be empty"), ("Hi\x0bthere", "U+000B"), ("x" * 301, "too long")],
)
def test_a_bad_greeting_is_refused_at_start_naming_the_variable(value: str, message: str) -> None:
    from shared.settings import SettingsError, load_settings

    with pytest.raises(SettingsError, match=rf"VOICE_GREETING: .*{re.escape(message)}"):
        load_settings(voice_greeting=value)
