"""`AtClient` through the real africastalking SDK against the real simulator on loopback.

Nothing is mocked: the SDK builds the request, the simulator answers as AT does, the SDK parses it,
and `AtClient` classifies the outcome. Every failure case also checks the key never leaks.
"""

from __future__ import annotations

import logging
import os
import time
import warnings
from collections.abc import Iterator
from decimal import Decimal

import africastalking
import pytest

from shared import at_client
from shared.at_client import (
    OVERRIDDEN_ATTRIBUTES,
    AtClient,
    AtError,
    AtMaybeSent,
    AtRejected,
    AtTransient,
    CallEntry,
    SmsRecipient,
    get_at_client,
    maybe_sent,
    parse_cost,
)
from shared.settings import SANDBOX_SMS_URL, SANDBOX_VOICE_URL, Settings
from simulator import Fault, Rule, Scenario, SimulatorServer, run_simulator_in_thread
from tests.sim_fixtures import AT_NUMBER, SIM_KEY, closed_port, sim_settings

A, B = "+254711000001", "+254711000002"


@pytest.fixture
def sim() -> Iterator[SimulatorServer]:
    s = run_simulator_in_thread(Scenario(), api_key=SIM_KEY, username="sandbox")
    yield s
    s.stop()


@pytest.fixture
def at(sim: SimulatorServer) -> AtClient:
    """A client pointed at `sim` (named so it does not shadow conftest's Flask `client`)."""
    return AtClient(sim_settings(sim))


@pytest.fixture(autouse=True)
def _debug_logs(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """Capture everything down to DEBUG (urllib3 included), then check the key never reached a log."""
    caplog.set_level(logging.DEBUG)
    yield
    assert SIM_KEY not in caplog.text


def assert_redacted(error: Exception) -> None:
    assert SIM_KEY not in str(error)
    assert SIM_KEY not in repr(error.args)


# -- the SDK is pointed at the simulator ------------------------------------------------------------------


def test_sdk_still_has_the_overridden_attributes_and_they_are_used(sim: SimulatorServer) -> None:
    # If an SDK upgrade renames these, the override silently stops working: fail here instead.
    africastalking.initialize("sandbox", "any-key")
    assert africastalking.SMS._baseUrl == SANDBOX_SMS_URL
    assert africastalking.Voice._baseUrl == SANDBOX_VOICE_URL
    for service, attributes in OVERRIDDEN_ATTRIBUTES.items():
        for name in attributes:
            assert hasattr(getattr(africastalking, service), name), f"africastalking.{service}.{name} is gone"

    client = AtClient(sim_settings(sim))
    assert (client.sms_url, client.voice_url) == (f"{sim.url}/version1", sim.url)
    africastalking.initialize("sandbox", "another-key")  # rebinds the globals; our client keeps its own
    client.send_sms("hello", [A])
    client.call([A])
    assert [r["path"] for r in sim.requests()] == ["/version1/messaging", "/call"]


def test_send_goes_out_as_the_sdk_writes_it(sim: SimulatorServer) -> None:
    AtClient(sim_settings(sim, at_sender_id="ACME")).send_sms("hi there", [A, B])
    [request] = sim.requests("/version1/messaging")
    assert request["form"] == {
        "username": "sandbox",
        "to": f"{A},{B}",
        "message": "hi there",
        "bulkSMSMode": "1",
        "from": "ACME",
        "enqueue": "1",
    }
    assert request["headers"]["Accept"] == "application/json"


# -- SMS answers ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("enqueue", "code"), [(True, 102), (False, 101)])
def test_send_result(at: AtClient, sim: SimulatorServer, enqueue: bool, code: int) -> None:
    result = at.send_sms("hello", [A], enqueue=enqueue)
    assert result.summary == "Sent to 1/1 Total Cost: KES 0.8000"
    [recipient] = result.recipients
    assert recipient.status_code == code
    assert (recipient.number, recipient.status) == (A, "Success")
    assert (recipient.cost, recipient.currency) == (Decimal("0.8000"), "KES")
    assert recipient.message_id is not None and recipient.message_id.startswith("ATXid_")
    assert ("enqueue" in sim.requests()[0]["form"]) is enqueue
    assert "from" not in sim.requests()[0]["form"]  # no sender id configured


def test_per_number_rejection(at: AtClient, sim: SimulatorServer) -> None:
    sim.set_scenario(Scenario(numbers={B: Rule(send_status=403)}))
    result = at.send_sms("hello", [A, B])
    assert result.summary == "Sent to 1/2 Total Cost: KES 0.8000"
    assert result.recipients[1] == SmsRecipient(
        number=B, status_code=403, status="InvalidPhoneNumber", message_id=None, cost=Decimal(0), currency=None
    )


def test_do_not_disturb_409_is_a_result_not_an_error(at: AtClient, sim: SimulatorServer) -> None:
    sim.set_scenario(Scenario(default=Rule(send_status=409)))
    result = at.send_sms("hello", [A])
    assert sim.requests()[0]["status"] == 409
    assert result.summary == "Sent to 0/1 Total Cost: 0"
    assert result.recipients == [
        SmsRecipient(
            number=A, status_code=409, status="DoNotDisturbRejection", message_id=None, cost=Decimal(0), currency=None
        )
    ]


def test_request_level_error_has_no_recipients(sim: SimulatorServer) -> None:
    sim.set_scenario(Scenario(allowed_sender_ids=("ACME",)))
    result = AtClient(sim_settings(sim, at_sender_id="NOTOURS")).send_sms("hello", [A])
    assert (result.summary, result.recipients) == ("InvalidSenderId", [])


# -- call answers -----------------------------------------------------------------------------------------


def test_call_result(at: AtClient, sim: SimulatorServer) -> None:
    sim.set_scenario(Scenario(numbers={B: Rule(call_status="InvalidPhoneNumber")}))
    result = at.call([A, B])
    assert result.error_message is None
    assert result.entries[0].status == "Queued"
    assert result.entries[0].session_id is not None and result.entries[0].session_id.startswith("ATVId_")
    assert result.entries[1] == CallEntry(phone_number=B, status="InvalidPhoneNumber", session_id=None)
    assert sim.requests("/call")[0]["form"] == {"username": "sandbox", "from": AT_NUMBER, "to": f"{A},{B}"}


def test_call_without_a_voice_number_is_rejected(sim: SimulatorServer) -> None:
    with pytest.raises(AtRejected, match="AT_VOICE_NUMBER"):
        AtClient(sim_settings(sim, at_voice_number="")).call([A])
    assert sim.requests() == []


# -- failures ---------------------------------------------------------------------------------------------


def test_wrong_key_is_rejected_with_401(sim: SimulatorServer) -> None:
    simulator = run_simulator_in_thread(Scenario(), api_key="the-right-key")
    try:
        client = AtClient(sim_settings(simulator))
        for attempt in (lambda: client.send_sms("hello", [A]), lambda: client.call([A])):
            with pytest.raises(AtRejected) as caught:
                attempt()
            assert caught.value.http_status == 401
            assert "The supplied authentication is invalid" in str(caught.value)
            assert_redacted(caught.value)
    finally:
        simulator.stop()


def test_throttling_is_known_not_sent_and_transient(at: AtClient, sim: SimulatorServer) -> None:
    sim.set_scenario(Scenario(faults=(Fault("/version1/messaging", 429), Fault("/call", 429))))
    for attempt in (lambda: at.send_sms("hello", [A]), lambda: at.call([A])):
        with pytest.raises(AtTransient) as caught:
            attempt()
        assert caught.value.http_status == 429 and not maybe_sent(caught.value)
        assert_redacted(caught.value)


@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_server_errors_may_have_been_sent(at: AtClient, sim: SimulatorServer, status: int) -> None:
    # akka-http's 503 is its request timeout (AT's handler runs on), 502/504 come from gateways: AT may have acted.
    sim.set_scenario(Scenario(faults=(Fault("/version1/messaging", status), Fault("/call", status))))
    with pytest.raises(AtMaybeSent) as sms_error:
        at.send_sms("hello", [A])
    with pytest.raises(AtMaybeSent) as call_error:
        at.call([A])
    assert sms_error.value.http_status == call_error.value.http_status == status
    assert maybe_sent(sms_error.value) and maybe_sent(call_error.value)
    assert_redacted(sms_error.value)


@pytest.mark.parametrize(
    ("body", "expected", "status"),
    [
        ("<html><head><title>502 Bad Gateway</title></head></html>", AtMaybeSent, 502),
        ("", AtMaybeSent, None),
        ("Service temporarily overloaded", AtMaybeSent, None),
        ("404 Not Found", AtMaybeSent, 404),
        ("Request is missing required form field 'to'", AtRejected, 400),
        ("Something we have never seen", AtMaybeSent, None),
    ],
)
def test_error_bodies_are_classified(
    at: AtClient, sim: SimulatorServer, body: str, expected: type, status: int | None
) -> None:
    # The HTTP status the simulator sends does not reach AtClient: the SDK keeps only the body.
    sim.set_scenario(Scenario(faults=(Fault("/version1/messaging", 418, body=body),)))
    with pytest.raises(expected) as caught:
        at.send_sms("hello", [A])
    assert caught.value.http_status == status


def test_a_body_echoing_the_key_is_redacted(at: AtClient, sim: SimulatorServer) -> None:
    sim.set_scenario(Scenario(faults=(Fault("/version1/messaging", 400, body=f"bad apiKey {SIM_KEY}"),)))
    with pytest.raises(AtMaybeSent) as caught:
        at.send_sms("hello", [A])
    assert "[redacted]" in str(caught.value)
    assert_redacted(caught.value)


def test_read_timeout_may_have_been_sent(sim: SimulatorServer) -> None:
    sim.set_scenario(Scenario(faults=(Fault("/version1/messaging", "timeout"),), timeout_seconds=10))
    client = AtClient(sim_settings(sim, at_timeout_read=0.5))
    started = time.monotonic()
    with pytest.raises(AtMaybeSent) as caught:
        client.send_sms("hello", [A])
    assert time.monotonic() - started < 3
    assert "ReadTimeout" in str(caught.value)
    assert caught.value.http_status is None
    assert_redacted(caught.value)


def test_a_slow_answer_is_a_read_timeout_although_at_sent_the_sms(sim: SimulatorServer) -> None:
    """The case a resend must not follow blindly: AT acted, only its answer was lost."""
    sim.set_scenario(Scenario(faults=(Fault("/version1/messaging", "slow"),), timeout_seconds=10))
    client = AtClient(sim_settings(sim, at_timeout_read=0.5))
    with pytest.raises(AtMaybeSent) as caught:
        client.send_sms("hello", [A])
    assert "ReadTimeout" in str(caught.value) and maybe_sent(caught.value)
    [request] = sim.requests("/version1/messaging")
    assert request["status"] == 201  # AT accepted it; the answer was what got lost


def test_connection_refused_is_transient() -> None:
    port = closed_port()
    settings = sim_settings(at_sms_url=f"http://127.0.0.1:{port}/version1", at_voice_url=f"http://127.0.0.1:{port}")
    client = AtClient(settings)
    for attempt in (lambda: client.send_sms("hello", [A]), lambda: client.call([A])):
        with pytest.raises(AtTransient) as caught:
            attempt()
        assert "ConnectionError" in str(caught.value)
        assert_redacted(caught.value)


@pytest.mark.parametrize("number", ["0711000001", "254711000001", "+254"])
def test_a_number_the_sdk_refuses_is_rejected(at: AtClient, sim: SimulatorServer, number: str) -> None:
    with pytest.raises(AtRejected, match="Invalid phone number") as caught:
        at.send_sms("hello", [A, number])
    assert caught.value.http_status is None
    assert sim.requests() == []  # refused before any request


def test_a_bare_string_is_not_sent_digit_by_digit(at: AtClient) -> None:
    with pytest.raises(TypeError):
        at.call(A)  # type: ignore[arg-type]


def test_non_json_success_answer_may_have_been_sent(at: AtClient, sim: SimulatorServer) -> None:
    # A 2xx whose Content-Type is not exactly application/json comes back from the SDK as a str.
    sim.set_scenario(Scenario(faults=(Fault("/version1/messaging", 201, body="<Response/>"),)))
    with pytest.raises(AtMaybeSent, match="not AT's JSON"):
        at.send_sms("hello", [A])


def test_logs_never_show_the_key(at: AtClient, sim: SimulatorServer, caplog: pytest.LogCaptureFixture) -> None:
    at.send_sms("hello", [A])
    sim.set_scenario(Scenario(faults=(Fault("/version1/messaging", 500),)))
    with pytest.raises(AtMaybeSent):
        at.send_sms("hello", [A])
    assert "shared.at_client" in {r.name for r in caplog.records}
    assert SIM_KEY not in caplog.text  # the autouse fixture checks this after every test too


# -- parsing ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("KES 0.8000", ("KES", Decimal("0.8000"))),
        ("USD 0.0079", ("USD", Decimal("0.0079"))),
        ("0", (None, Decimal(0))),
        (None, (None, None)),
        ("lots", (None, None)),
    ],
)
def test_parse_cost(text: str | None, expected: tuple[str | None, Decimal | None]) -> None:
    assert parse_cost(text) == expected


# -- one client per process ---------------------------------------------------------------------------------


@pytest.fixture
def process_client(sim: SimulatorServer, monkeypatch: pytest.MonkeyPatch) -> Iterator[Settings]:
    settings = sim_settings(sim)
    monkeypatch.setattr(at_client, "get_settings", lambda: settings)
    at_client.reset_at_client()
    yield settings
    at_client.reset_at_client()


def test_get_at_client_is_cached(process_client: Settings) -> None:
    assert get_at_client() is get_at_client()


def test_get_at_client_is_rebuilt_after_fork(process_client: Settings, sim: SimulatorServer) -> None:
    parent = get_at_client()
    read_end, write_end = os.pipe()
    with warnings.catch_warnings():
        # Python 3.12+ warns about fork() in a threaded process; the child only sends one request.
        warnings.simplefilter("ignore", DeprecationWarning)
        pid = os.fork()
    if pid == 0:  # the child: report whether it built its own client and could send with it
        status = 1
        try:
            child = get_at_client()
            child.send_sms("from the child", [A])
            status = 0 if child is not parent else 2
        finally:
            os.write(write_end, bytes([status]))
            os._exit(0)
    os.close(write_end)
    try:
        answer = os.read(read_end, 1)
    finally:
        os.close(read_end)
        os.waitpid(pid, 0)
    assert answer == bytes([0])
    assert [r["form"]["message"] for r in sim.requests()] == ["from the child"]
    assert get_at_client() is parent  # the parent keeps its own


# -- one classification: known outcome, known not sent, maybe sent ----------------------------------------------

KNOWN, NOT_SENT_RETRY, NOT_SENT_REFUSED, MAYBE_SENT = (
    "known outcome",
    "not sent: retry",
    "not sent: refused",
    "maybe sent",
)
PROXY_502 = "<html><head><title>502 Bad Gateway</title></head><body><center>nginx</center></body></html>"
SMS_JSON = '{"SMSMessageData":{"Message":"Sent to 0/1 Total Cost: 0","Recipients":[]}}'


def outcome(attempt) -> str:
    """What AtClient says happened: a result, or how its error classifies the request."""
    try:
        attempt()
    except AtError as exc:
        assert_redacted(exc)
        if maybe_sent(exc):
            return MAYBE_SENT
        return NOT_SENT_RETRY if isinstance(exc, AtTransient) else NOT_SENT_REFUSED
    return KNOWN


ANSWERS = [
    # AT's JSON, whatever its Content-Type or HTTP status: a known outcome per recipient.
    ("charset JSON", Fault("*", content_type="application/json; charset=utf-8"), KNOWN),
    ("JSON as text/plain", Fault("*", content_type="text/plain"), KNOWN),
    ("409-style JSON on a 400", Fault("/version1/messaging", 400, body=SMS_JSON), KNOWN),
    # Known not sent: AT refused before acting.
    ("AT's 429", Fault("*", 429), NOT_SENT_RETRY),
    ("AT's 400 missing field", Fault("*", 400, body="Request is missing required form field 'to'"), NOT_SENT_REFUSED),
    # Everything else: AT may have acted.
    ("accept-then-502 page", Fault("*", 502, acted=True), MAYBE_SENT),
    ("accept-then-504 page", Fault("*", 504, acted=True), MAYBE_SENT),
    ("502 page before acting", Fault("*", 502, body=PROXY_502), MAYBE_SENT),
    ("empty 502", Fault("*", 502, body=""), MAYBE_SENT),
    ("akka 500", Fault("*", 500), MAYBE_SENT),
    ("akka 503 request timeout", Fault("*", 503), MAYBE_SENT),
    ("proxy 404", Fault("*", 404), MAYBE_SENT),
    ("unknown body", Fault("*", 418, body="Something we have never seen"), MAYBE_SENT),
    ("truncated JSON", Fault("*", truncate=25), MAYBE_SENT),
    ("truncated charset JSON", Fault("*", truncate=25, content_type="application/json; charset=utf-8"), MAYBE_SENT),
    ("2xx non-JSON", Fault("*", 201, body="<Response/>"), MAYBE_SENT),
    ("2xx JSON of another shape", Fault("*", 200, body='{"ok": true}', content_type="application/json"), MAYBE_SENT),
    ("reset after acting", Fault("*", "reset"), MAYBE_SENT),
]


@pytest.mark.parametrize(("fault", "expected"), [(f, e) for _, f, e in ANSWERS], ids=[n for n, _, _ in ANSWERS])
def test_every_sms_answer_is_classified_once(at: AtClient, sim: SimulatorServer, fault: Fault, expected: str) -> None:
    sim.set_scenario(Scenario(faults=(fault,)))
    assert outcome(lambda: at.send_sms("hello", [A])) == expected


@pytest.mark.parametrize(
    ("fault", "expected"),
    [(f, e) for n, f, e in ANSWERS if "400" not in n],
    ids=[n for n, _, _ in ANSWERS if "400" not in n],
)
def test_every_call_answer_is_classified_once(at: AtClient, sim: SimulatorServer, fault: Fault, expected: str) -> None:
    sim.set_scenario(Scenario(faults=(fault,)))
    assert outcome(lambda: at.call([A])) == expected


def test_charset_json_gives_ats_own_ids(at: AtClient, sim: SimulatorServer) -> None:
    sim.set_scenario(Scenario(faults=(Fault("*", content_type="application/json; charset=utf-8", count=2),)))
    [recipient] = at.send_sms("hello", [A]).recipients
    assert recipient.status_code == 102 and recipient.message_id and recipient.message_id.startswith("ATXid_")
    [entry] = at.call([A]).entries
    assert entry.status == "Queued" and entry.session_id and entry.session_id.startswith("ATVId_")


@pytest.mark.parametrize(
    ("name", "settings", "expected"),
    [
        ("connection refused", {"port": "closed"}, NOT_SENT_RETRY),
        ("DNS failure", {"host": "reach-test.invalid"}, NOT_SENT_RETRY),
        ("TLS failure", {"scheme": "https"}, NOT_SENT_RETRY),
        ("read timeout", {"fault": Fault("*", "timeout")}, MAYBE_SENT),
        ("slow answer", {"fault": Fault("*", "slow")}, MAYBE_SENT),
    ],
)
def test_transport_failures_are_classified(sim: SimulatorServer, name: str, settings: dict, expected: str) -> None:
    host, port, scheme = settings.get("host", "127.0.0.1"), sim.port, settings.get("scheme", "http")
    if settings.get("port") == "closed":
        port = closed_port()
    if "fault" in settings:
        sim.set_scenario(Scenario(faults=(settings["fault"],), timeout_seconds=5))
    base = f"{scheme}://{host}:{port}"
    client = AtClient(sim_settings(at_sms_url=f"{base}/version1", at_voice_url=base, at_timeout_read=0.5))
    assert outcome(lambda: client.send_sms("hello", [A])) == expected, name


def test_a_number_the_sdk_refuses_is_known_not_sent(at: AtClient, sim: SimulatorServer) -> None:
    assert outcome(lambda: at.send_sms("hello", ["0711000001"])) == NOT_SENT_REFUSED
    assert sim.requests() == []
