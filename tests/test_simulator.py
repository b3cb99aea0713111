"""The simulator is AT on the wire (at-api.md §11): answers, callbacks, faults, scenarios.

Requests are plain `requests` calls, so these tests see exactly the bytes a client would.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections import Counter
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from urllib.parse import quote, quote_plus
from zoneinfo import ZoneInfo

import pytest
import requests

from simulator import Fault, Rule, Scenario, SimulatorServer, run_simulator_in_thread, wire
from tests.conftest import wait_for
from tests.sim_fixtures import AT_NUMBER, SIM_KEY, Receiver

MESSAGE_ID = re.compile(r"^ATXid_[0-9a-f]{32}$")
SESSION_ID = re.compile(r"^ATVId_[0-9a-f]{32}$")
TOKEN = "hook-token-123"
A, B, C, D = "+254711000001", "+254711000002", "+254711000003", "+254711000004"


@pytest.fixture
def hooks() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.stop()


@pytest.fixture
def sim(hooks: Receiver) -> Iterator[SimulatorServer]:
    s = run_simulator_in_thread(Scenario(), api_key=SIM_KEY, callback_base_url=hooks.url, webhook_token=TOKEN)
    yield s
    s.stop()


def send(sim: SimulatorServer, key: str = SIM_KEY, **fields: str) -> requests.Response:
    form = {"username": "sandbox", "to": A, "message": "hello", "bulkSMSMode": "1", **fields}
    headers = {"apiKey": key, "Accept": "application/json"}
    return requests.post(f"{sim.url}/version1/messaging", data=form, headers=headers, timeout=5)


def place_call(sim: SimulatorServer, to: str = A, key: str = SIM_KEY) -> requests.Response:
    form = {"username": "sandbox", "from": AT_NUMBER, "to": to}
    return requests.post(f"{sim.url}/call", data=form, headers={"apiKey": key}, timeout=5)


def recipients(resp: requests.Response) -> list[dict]:
    return resp.json()["SMSMessageData"]["Recipients"]


# -- POST /version1/messaging -------------------------------------------------------------------------------


def test_send_answers_201_with_exact_json_content_type(sim: SimulatorServer) -> None:
    resp = send(sim, to=f"{A},{B}")
    assert resp.status_code == 201
    assert resp.headers["Content-Type"] == "application/json"
    data = resp.json()["SMSMessageData"]
    assert data["Message"] == "Sent to 2/2 Total Cost: KES 1.6000"
    assert [r["number"] for r in data["Recipients"]] == [A, B]
    for r in data["Recipients"]:
        assert (r["statusCode"], r["status"], r["cost"]) == (101, "Success", "KES 0.8000")
        assert MESSAGE_ID.match(r["messageId"])


def test_enqueue_gives_status_code_102(sim: SimulatorServer) -> None:
    assert recipients(send(sim, enqueue="1"))[0]["statusCode"] == 102


def test_api_key_header_name_is_case_insensitive(sim: SimulatorServer) -> None:
    form = {"username": "sandbox", "to": A, "message": "hi"}
    resp = requests.post(f"{sim.url}/version1/messaging", data=form, headers={"apikey": SIM_KEY}, timeout=5)
    assert resp.status_code == 201


@pytest.mark.parametrize(
    ("key", "username"),
    [("wrong-key", "sandbox"), ("", "sandbox"), (SIM_KEY, "someone-else")],
    ids=["wrong key", "no key", "wrong username"],
)
def test_bad_credentials_get_ats_401(sim: SimulatorServer, key: str, username: str) -> None:
    resp = send(sim, key=key, username=username)
    assert resp.status_code == 401
    assert resp.headers["Content-Type"] == "text/plain; charset=UTF-8"
    assert resp.headers["WWW-Authenticate"] == 'Basic realm="api",charset=UTF-8'
    assert resp.text == "The supplied authentication is invalid"


@pytest.mark.parametrize("missing", ["username", "to", "message"])
def test_missing_field_gets_400_naming_it(sim: SimulatorServer, missing: str) -> None:
    form = {"username": "sandbox", "to": A, "message": "hi"}
    del form[missing]
    resp = requests.post(f"{sim.url}/version1/messaging", data=form, headers={"apiKey": SIM_KEY}, timeout=5)
    assert resp.status_code == 400
    assert resp.text == f"Request is missing required form field '{missing}'"


def test_per_number_send_failures(sim: SimulatorServer) -> None:
    sim.set_scenario(Scenario(numbers={B: Rule(send_status=403), C: Rule(send_status=405), D: Rule(send_status=406)}))
    resp = send(sim, to=f"{A},{B},{C},{D}", enqueue="1")
    assert resp.status_code == 201
    assert resp.json()["SMSMessageData"]["Message"] == "Sent to 1/4 Total Cost: KES 0.8000"
    by_number = {r["number"]: r for r in recipients(resp)}
    assert by_number[A]["statusCode"] == 102
    assert by_number[B] == {
        "statusCode": 403,
        "number": B,
        "status": "InvalidPhoneNumber",
        "cost": "0",
        "messageId": "None",
    }
    assert (by_number[C]["status"], by_number[D]["status"]) == ("InsufficientBalance", "UserInBlacklist")


def test_do_not_disturb_makes_the_whole_answer_409(sim: SimulatorServer) -> None:
    sim.set_scenario(Scenario(default=Rule(send_status=409)))
    resp = send(sim)
    assert resp.status_code == 409
    assert resp.headers["Content-Type"] == "application/json"
    assert resp.json() == {
        "SMSMessageData": {
            "Message": "Sent to 0/1 Total Cost: 0",
            "Recipients": [
                {"statusCode": 409, "number": A, "status": "DoNotDisturbRejection", "cost": "0", "messageId": "None"}
            ],
        }
    }


def test_dnd_hours_refuse_a_number_only_inside_them_in_its_local_time(sim: SimulatorServer) -> None:
    """`dnd_hours` (Nigeria's promotional ban is 20:00-08:00): 409 inside them on the simulator's clock, in
    the number's own zone, and an accepted send outside them, as after the clock moved past them."""
    lagos = ZoneInfo("Africa/Lagos")
    start = datetime.now(lagos) - timedelta(hours=1)
    hours = f"{start:%H:%M}-{start + timedelta(hours=2):%H:%M}"  # now, in Lagos
    nigerian = "+2348030000001"
    sim.set_scenario(Scenario(numbers={nigerian: Rule(dnd_hours=hours)}))
    refused = send(sim, to=f"{nigerian},{A}")
    assert refused.status_code == 409
    assert [(r["number"], r["statusCode"]) for r in recipients(refused)] == [(nigerian, 409), (A, 101)]

    sim.advance_clock(3 * 3600)  # past them
    assert send(sim, to=nigerian).status_code == 201
    with pytest.raises(ValueError, match="not a send window"):
        Rule(dnd_hours="20-08")


def test_unknown_sender_id_is_a_request_level_error(sim: SimulatorServer) -> None:
    sim.set_scenario(Scenario(allowed_sender_ids=("ACME",)))
    resp = send(sim, **{"from": "OTHER"})
    assert resp.status_code == 201
    assert resp.json() == {"SMSMessageData": {"Message": "InvalidSenderId", "Recipients": []}}
    assert send(sim, **{"from": "ACME"}).json()["SMSMessageData"]["Message"].startswith("Sent to 1/1")


def test_faults_answer_the_next_requests_then_stop(sim: SimulatorServer) -> None:
    sim.set_scenario(Scenario(faults=(Fault("/version1/messaging", 500, count=2),)))
    first, second, third = send(sim), send(sim), send(sim)
    assert (first.status_code, second.status_code, third.status_code) == (500, 500, 201)
    assert first.text == "There was an internal server error."
    assert [r["status"] for r in sim.requests("/version1/messaging")] == [500, 500, 201]


# -- POST /call ----------------------------------------------------------------------------------------------


def test_call_answers_200_with_one_entry_per_number(sim: SimulatorServer) -> None:
    resp = place_call(sim, to=f"{A},{B}")
    assert resp.status_code == 200
    assert resp.headers["Content-Type"] == "application/json"
    body = resp.json()
    assert body["errorMessage"] == "None"
    assert [(e["phoneNumber"], e["status"]) for e in body["entries"]] == [(A, "Queued"), (B, "Queued")]
    assert all(SESSION_ID.match(e["sessionId"]) for e in body["entries"])


def test_call_accepts_json_and_marks_invalid_numbers(sim: SimulatorServer) -> None:
    sim.set_scenario(Scenario(numbers={B: Rule(call_status="InvalidPhoneNumber")}))
    payload = {"username": "sandbox", "from": AT_NUMBER, "to": [A, B], "clientRequestId": "attempt-7"}
    resp = requests.post(f"{sim.url}/call", json=payload, headers={"apiKey": SIM_KEY}, timeout=5)
    entries = resp.json()["entries"]
    assert entries[1] == {"phoneNumber": B, "status": "InvalidPhoneNumber", "sessionId": "None"}
    assert sim.requests("/call")[0]["form"]["clientRequestId"] == "attempt-7"


def test_call_checks_the_key(sim: SimulatorServer) -> None:
    resp = place_call(sim, key="nope")
    assert (resp.status_code, resp.text) == (401, "The supplied authentication is invalid")


# -- delivery reports ----------------------------------------------------------------------------------------


def test_delivery_reports_follow_the_scenario_with_the_token(sim: SimulatorServer, hooks: Receiver) -> None:
    sim.set_scenario(Scenario(default=Rule(dlr=(("Sent", None), ("Buffered", None), ("Failed", "UserIsInactive")))))
    message_id = recipients(send(sim))[0]["messageId"]
    assert sim.wait_idle(5)
    posts = hooks.posts("/dlr")
    assert [p["form"] for p in posts] == [
        wire.dlr(message_id, "Sent", A),
        wire.dlr(message_id, "Buffered", A),
        wire.dlr(message_id, "Failed", A, failure_reason="UserIsInactive"),
    ]
    assert all(p["args"] == {"token": TOKEN} for p in posts)
    assert all(p["content_type"] == "application/x-www-form-urlencoded" for p in posts)


def test_rejected_numbers_get_no_reports(sim: SimulatorServer, hooks: Receiver) -> None:
    sim.set_scenario(Scenario(numbers={B: Rule(send_status=403)}))
    send(sim, to=f"{A},{B}")
    assert sim.wait_idle(5)
    assert {p["form"]["phoneNumber"] for p in hooks.posts("/dlr")} == {A}


def test_duplicates_post_each_report_n_times(sim: SimulatorServer, hooks: Receiver) -> None:
    sim.set_scenario(Scenario(default=Rule(duplicates=3)))
    send(sim)
    assert sim.wait_idle(5)
    assert Counter(p["form"]["status"] for p in hooks.posts("/dlr")) == {"Sent": 3, "Success": 3}


def test_shuffle_posts_reports_out_of_order(sim: SimulatorServer, hooks: Receiver) -> None:
    steps = ("Sent", "Submitted", "Buffered", "Success")
    sim.set_scenario(Scenario(default=Rule(dlr=tuple((s, None) for s in steps), shuffle=True), seed=1))
    send(sim)
    assert sim.wait_idle(5)
    posted = [p["form"]["status"] for p in hooks.posts("/dlr")]
    assert sorted(posted) == sorted(steps)
    assert posted != list(steps)


def test_delay_spaces_the_reports(sim: SimulatorServer, hooks: Receiver) -> None:
    sim.set_scenario(Scenario(default=Rule(delay=0.2)))
    sent_at = time.monotonic()
    send(sim)
    assert sim.wait_idle(5)
    first, second = hooks.posts("/dlr")
    # Lower bounds only: a loaded machine may post late, never early.
    assert first["time"] - sent_at >= 0.2
    assert second["time"] - sent_at >= 0.4


def test_failed_callbacks_are_retried_and_recorded(sim: SimulatorServer, hooks: Receiver) -> None:
    hooks.fail_first = 2
    sim.set_scenario(Scenario(default=Rule(dlr=(("Success", None),))))
    send(sim)
    assert sim.wait_idle(5)
    assert [c["status"] for c in sim.callbacks("dlr")] == [500, 500, 200]
    assert [c["attempt"] for c in sim.callbacks("dlr")] == [1, 2, 3]


def test_unreachable_receiver_is_recorded_and_given_up() -> None:
    sim = run_simulator_in_thread(Scenario(), api_key=SIM_KEY, callback_base_url="http://127.0.0.1:9")
    try:
        send(sim)
        assert sim.wait_idle(10)
        attempts = sim.callbacks("dlr")
        assert len(attempts) == 8  # two reports, four attempts each
        assert all(a["status"] is None and "ConnectionError" in a["error"] for a in attempts)
    finally:
        sim.stop()


def test_no_callback_url_means_no_callbacks() -> None:
    sim = run_simulator_in_thread(Scenario(), api_key=SIM_KEY)
    try:
        assert send(sim).status_code == 201
        assert sim.wait_idle(1)
        assert sim.callbacks() == []
    finally:
        sim.stop()


# -- voice callbacks -----------------------------------------------------------------------------------------


def test_answered_call_with_get_digits_posts_the_digits(sim: SimulatorServer, hooks: Receiver) -> None:
    hooks.ask_digits = True
    sim.set_scenario(Scenario(default=Rule(dtmf="1", duration=30, amount="4.5000")))
    session_id = place_call(sim).json()["entries"][0]["sessionId"]
    assert sim.wait_idle(5)
    active, digits, final = (p["form"] for p in hooks.posts("/voice"))
    assert {k: active[k] for k in ("isActive", "direction", "callSessionState")} == {
        "isActive": "1",
        "direction": "Outbound",
        "callSessionState": "Active",
    }
    assert (active["sessionId"], active["callerNumber"], active["destinationNumber"]) == (session_id, A, AT_NUMBER)
    assert "dtmfDigits" not in active
    assert (digits["isActive"], digits["dtmfDigits"]) == ("1", "1")
    expected = wire.voice_final_answered(session_id, A, AT_NUMBER, duration=30, amount="4.5000")
    assert final == {**expected, "callStartTime": final["callStartTime"]}
    assert sim.callbacks("voice")[0]["actions"] == ["GetDigits"]
    assert sim.callbacks("voice")[1]["said"] == ["Hello from Reach"]


def test_answered_call_without_get_digits_posts_no_digits(sim: SimulatorServer, hooks: Receiver) -> None:
    sim.set_scenario(Scenario(default=Rule(dtmf="1")))
    place_call(sim)
    assert sim.wait_idle(5)
    posts = [p["form"] for p in hooks.posts("/voice")]
    assert [(p["isActive"], "dtmfDigits" in p) for p in posts] == [("1", False), ("0", False)]
    assert posts[1]["hangupCause"] == "NORMAL_CLEARING"
    assert all(p["args"] == {"token": TOKEN} for p in hooks.posts("/voice"))


@pytest.mark.parametrize("cause", ["USER_BUSY", "NO_ANSWER", "UNALLOCATED_NUMBER"])
def test_unanswered_call_posts_one_final(sim: SimulatorServer, hooks: Receiver, cause: str) -> None:
    sim.set_scenario(Scenario(default=Rule(voice=cause)))
    session_id = place_call(sim).json()["entries"][0]["sessionId"]
    assert sim.wait_idle(5)
    [post] = hooks.posts("/voice")
    assert post["form"] == wire.voice_final_not_answered(session_id, A, AT_NUMBER, cause)
    assert post["form"]["callStartTime"] == "None"
    assert (post["form"]["durationInSeconds"], post["form"]["amount"]) == ("0", "0")


def test_invalid_call_number_gets_no_callbacks(sim: SimulatorServer, hooks: Receiver) -> None:
    sim.set_scenario(Scenario(default=Rule(call_status="InvalidPhoneNumber")))
    place_call(sim)
    assert sim.wait_idle(5)
    assert hooks.posts() == []


# -- the control API -----------------------------------------------------------------------------------------


def test_control_api_over_http(sim: SimulatorServer, hooks: Receiver) -> None:
    base = f"{sim.url}/_sim"
    scenario = {"numbers": {"+2547110000*": {"send_status": 403}}}
    assert requests.post(f"{base}/scenario", json=scenario, timeout=5).status_code == 200
    assert recipients(send(sim))[0]["statusCode"] == 403
    # Callbacks are scheduled once the answer is sent, a moment after the client has it: wait first.
    assert sim.wait_idle(5)
    assert requests.get(f"{base}/idle", timeout=5).json() == {"idle": True}
    [entry] = requests.get(f"{base}/requests", timeout=5).json()
    assert (entry["path"], entry["form"]["to"], entry["status"]) == ("/version1/messaging", A, 201)
    assert requests.get(f"{base}/callbacks", timeout=5).json() == []
    assert requests.post(f"{base}/reset", timeout=5).status_code == 200
    assert requests.get(f"{base}/requests", timeout=5).json() == []


def test_control_api_never_shows_the_webhook_token_or_the_key(hooks: Receiver) -> None:
    """Anyone on loopback can read /_sim/: the callback log names where each callback went, not the token
    it carried (a token that URL-encoding changes, so its encoded spelling is hidden too)."""
    token = "hook/token+secret=42"
    scenario = Scenario(default=Rule(dtmf="1"))
    s = run_simulator_in_thread(scenario, api_key=SIM_KEY, callback_base_url=hooks.url, webhook_token=token)
    try:
        assert send(s).status_code == 201 and place_call(s).status_code == 200
        assert s.wait_idle(5)
        assert all(p["args"] == {"token": token} for p in hooks.posts())  # the receiver did get it
        shown = {path: requests.get(f"{s.url}/_sim/{path}", timeout=5).text for path in ("callbacks", "requests")}
        for text in shown.values():
            for secret in (token, quote(token, safe=""), quote_plus(token), SIM_KEY):
                assert secret not in text
        urls = {entry["url"] for entry in json.loads(shown["callbacks"])}
        assert urls == {f"{hooks.url}/dlr?token=[redacted]", f"{hooks.url}/voice?token=[redacted]"}
    finally:
        s.stop()


def test_control_api_rejects_a_bad_scenario(sim: SimulatorServer) -> None:
    resp = requests.post(f"{sim.url}/_sim/scenario", json={"default": {"dlrs": []}}, timeout=5)
    assert resp.status_code == 400
    assert "dlrs" in resp.json()["error"]


def test_reset_drops_pending_callbacks(sim: SimulatorServer, hooks: Receiver) -> None:
    sim.set_scenario(Scenario(default=Rule(delay=30)))
    send(sim)
    sim.reset()
    assert sim.wait_idle(2)
    assert hooks.posts() == [] and sim.requests() == []


def test_held_requests_wait_unanswered_until_released(sim: SimulatorServer, hooks: Receiver) -> None:
    """`hold`: AT receives the request and acts on it only when the test releases it, so a test decides when
    AT answers (tests/test_cycle_control_live.py cancels a cycle while its first batch is held)."""
    sim.set_scenario(Scenario.from_dict({"hold": ["/version1/messaging"]}))
    answers: list[requests.Response] = []
    senders = [threading.Thread(target=lambda to=to: answers.append(send(sim, to=to))) for to in (A, B)]
    for sender in senders:
        sender.start()
    wait_for(lambda: requests.get(f"{sim.url}/_sim/held", timeout=5).json() == {"held": 2}, timeout=5)
    assert sorted(r["form"]["to"] for r in sim.requests()) == [A, B]  # recorded when received
    assert answers == [] and hooks.posts() == []  # received, not acted on: no answer, no report

    assert requests.post(f"{sim.url}/_sim/release", json={"count": 1}, timeout=5).json() == {"released": 1}
    wait_for(lambda: len(answers) == 1, timeout=5)
    assert sim.held() == 1
    sim.release()
    for sender in senders:
        sender.join(5)
    assert sorted(recipients(r)[0]["number"] for r in answers) == [A, B]
    assert all(r.status_code == 201 for r in answers)
    assert place_call(sim).status_code == 200  # other paths are not held
    wait_for(lambda: len(hooks.posts("/dlr")) == 4, timeout=5, what="both messages' reports")


# -- scenarios and wire ---------------------------------------------------------------------------------------


def test_scenario_loads_from_json(tmp_path: Path) -> None:
    raw = {
        "default": {"dlr": ["Sent", "Success"], "delay": 0.1},
        "numbers": {
            A: {"dlr": ["Sent", ["Failed", "UserIsInactive"]], "duplicates": 2, "shuffle": True},
            "+25472*": {"voice": "USER_BUSY"},
            "+254722*": {"send_status": 403},
            "*": {"call_status": "InvalidPhoneNumber"},
        },
        "faults": [{"path": "/call", "status": "timeout", "count": 1}],
        "allowed_sender_ids": ["ACME"],
        "timeout_seconds": 3,
        "seed": 7,
    }
    path = tmp_path / "scenario.json"
    path.write_text(json.dumps(raw), encoding="utf-8")
    scenario = Scenario.from_file(path)
    rule_a = scenario.rule_for(A)
    assert rule_a.dlr == (("Sent", None), ("Failed", "UserIsInactive"))
    assert (rule_a.duplicates, rule_a.shuffle, rule_a.delay) == (2, True, 0.1)  # merged over the default
    assert scenario.rule_for("+254722000000").send_status == 403  # the longest prefix wins
    assert scenario.rule_for("+254720000000").voice == "USER_BUSY"
    assert scenario.rule_for("+255000000000").call_status == "InvalidPhoneNumber"
    assert scenario.faults == (Fault("/call", "timeout", 1),)
    assert (scenario.allowed_sender_ids, scenario.timeout_seconds, scenario.seed) == (("ACME",), 3.0, 7)


def test_scenario_without_numbers_uses_the_default() -> None:
    assert Scenario.from_dict({}).rule_for(A) == Rule()


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"defaults": {}}, "unknown field(s) defaults"),
        ({"default": {"dlr": [["Failed"]]}}, "dlr"),
        ({"default": {"send_status": 999}}, "send_status"),
        ({"faults": [{"path": "/call", "status": "sluggish"}]}, "fault status"),
        ({"default": {"duplicates": 0}}, "duplicates"),
    ],
)
def test_bad_scenarios_name_the_problem(raw: dict, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        Scenario.from_dict(raw)


def test_wire_ids_and_bodies() -> None:
    assert MESSAGE_ID.match(wire.new_message_id())
    assert SESSION_ID.match(wire.new_session_id())
    assert wire.dlr("ATXid_a1", "Success", A) == {
        "id": "ATXid_a1",
        "status": "Success",
        "phoneNumber": A,
        "networkCode": "63902",
    }
    assert wire.dlr("ATXid_a1", "Failed", A, failure_reason="UserIsInactive", retry_count=0)["retryCount"] == "0"
    sms = wire.incoming_sms(A, "21512", "Msg", "ec9adc86", link_id="0309", date="2017-05-03T06:04:45Z")
    assert list(sms) == ["date", "from", "id", "linkId", "text", "to", "networkCode"]
    assert "linkId" not in wire.incoming_sms(A, "21512", "Msg", "ec9adc86")
    assert wire.ussd("ATUid_1", A, "1*2")["text"] == "1*2"


def test_a_network_outage_fails_its_reports_for_a_while(sim: SimulatorServer, hooks: Receiver) -> None:
    """One network fails everything for `seconds` on the simulator's clock: its numbers' reports are the
    outage's (status and failureReason as AT words them, networkCode kept); other networks are untouched."""
    airtel = "+254733000001"
    sim.set_scenario(
        Scenario.from_dict(
            {
                "numbers": {"+254733*": {"network_code": "63903"}},
                "outages": [{"network_code": "63903", "seconds": 600}],
            }
        )
    )
    during = recipients(send(sim, to=f"{A},{airtel}"))
    assert sim.wait_idle(5)
    assert [p["form"] for p in hooks.posts("/dlr")] == [
        wire.dlr(during[0]["messageId"], "Sent", A),
        wire.dlr(during[0]["messageId"], "Success", A),
        wire.dlr(during[1]["messageId"], "Sent", airtel, "63903"),
        wire.dlr(during[1]["messageId"], "Failed", airtel, "63903", failure_reason="DeliveryFailure"),
    ]
    sim.advance_clock(601)  # the outage is over: Airtel delivers again
    after = recipients(send(sim, to=airtel))[0]["messageId"]
    assert sim.wait_idle(5)
    assert [p["form"] for p in hooks.posts("/dlr")][-1] == wire.dlr(after, "Success", airtel, "63903")
    with pytest.raises(ValueError, match="outage"):
        Scenario.from_dict({"outages": [{"network_code": "63903", "seconds": -1}]})
