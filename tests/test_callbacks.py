"""The receiver's callback endpoints, as AT and the seed's curl examples call them.

Each case is a wire-exact body (form as AT posts it, or the seed's JSON), the status the receiver must
answer and what the answer or the inbox must show. Nothing here needs the worker: what a 200 promises is
that the callback is on the Redis inbox.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
from typing import Any

import pytest

from shared import inbox
from simulator import wire
from tests.conftest import FIXTURES, WEBHOOK_TOKEN, free_port

MSG_ID = "ATXid_dda018a640edfcc5d2ce455de3e4a6e7"
SESSION = "ATVId_b1782591735cb0a658b2c0da6cdb2abf"
CUSTOMER = "+254711000001"
AT_NUMBER = "+254711082369"


@dataclass
class Case:
    label: str
    path: str
    body: dict[str, Any]
    status: int = 200
    as_json: bool = False
    body_has: str = ""
    queued_kind: str | None = None
    headers: dict[str, str] = field(default_factory=dict)


def _seed(name: str) -> dict[str, Any]:
    return json.loads((FIXTURES / "seed" / f"{name}.json").read_text())


CASES = [
    # Delivery reports
    Case("dlr form", "/dlr", wire.dlr(MSG_ID, "Failed", CUSTOMER, failure_reason="UserIsInactive"), queued_kind="dlr"),
    Case("dlr json", "/dlr", wire.dlr(MSG_ID, "Success", CUSTOMER), as_json=True, queued_kind="dlr"),
    Case("dlr seed curl", "/dlr", _seed("dlr"), as_json=True, queued_kind="dlr"),
    Case("dlr without status", "/dlr", {"id": MSG_ID, "phoneNumber": CUSTOMER}, 400, body_has="missing field: status"),
    Case("dlr without id", "/dlr", {"status": "Success", "phoneNumber": CUSTOMER}, 400, body_has="missing field: id"),
    Case("dlr empty", "/dlr", {}, 400, body_has="missing field: id"),
    Case("dlr unknown status is accepted", "/dlr", wire.dlr(MSG_ID, "Teleported", CUSTOMER), queued_kind="dlr"),
    Case("dlr id too long", "/dlr", wire.dlr("x" * 500, "Success", CUSTOMER), 400, body_has="field too long: id"),
    # Incoming SMS
    Case("sms form", "/receiveSMS", wire.incoming_sms(CUSTOMER, "21512", "STOP", "ec9adc86-51d5"), queued_kind="sms"),
    Case("sms seed curl", "/receiveSMS", _seed("receiveSMS"), as_json=True, queued_kind="sms"),
    Case(
        "sms without from", "/receiveSMS", {"to": "21512", "id": "x", "text": "hi"}, 400, body_has="missing field: from"
    ),
    Case(
        "sms bad from", "/receiveSMS", {"from": "hello", "to": "1", "id": "x"}, 400, body_has="bad phone number in from"
    ),
    Case(
        "sms emoji and SQL",
        "/receiveSMS",
        wire.incoming_sms(CUSTOMER, "21512", "😀'); DROP TABLE contacts;--", "id-sql"),
        queued_kind="sms",
    ),
    # Voice
    Case(
        "voice final form",
        "/voice",
        wire.voice_final_not_answered(SESSION, CUSTOMER, AT_NUMBER, "USER_BUSY"),
        queued_kind="voice",
    ),
    Case(
        "voice final json",
        "/voice",
        wire.voice_final_answered(SESSION, CUSTOMER, AT_NUMBER),
        as_json=True,
        queued_kind="voice",
    ),
    Case("voice live", "/voice", wire.voice_active(SESSION, CUSTOMER, AT_NUMBER), body_has="<Say", queued_kind="voice"),
    Case(
        "voice live digits",
        "/voice",
        wire.voice_active(SESSION, CUSTOMER, AT_NUMBER, dtmf_digits="1"),
        body_has="Thank you",
        queued_kind="voice",
    ),
    Case("voice without session", "/voice", {"isActive": "1"}, 400, body_has="missing field: sessionId"),
    Case("voice bad isActive", "/voice", {"isActive": "maybe", "sessionId": SESSION}, 400, body_has="isActive"),
    Case(
        "communicate seed voice curl",
        "/communicate",
        _seed("communicate_voice"),
        as_json=True,
        body_has="<Say",
        queued_kind="voice",
    ),
    Case(
        "communicate voice form",
        "/communicate",
        wire.voice_final_not_answered(SESSION, CUSTOMER, AT_NUMBER, "NO_ANSWER"),
        queued_kind="voice",
    ),
    Case("communicate neither", "/communicate", {"hello": "world"}, 400, body_has="expected a voice callback"),
    # USSD
    Case("ussd form", "/ussd", wire.ussd("ATUid_1", CUSTOMER, ""), body_has="CON ", queued_kind="ussd"),
    Case("ussd seed curl", "/ussd", _seed("ussd"), as_json=True, body_has="END ", queued_kind="ussd"),
]


def _post(client, case: Case, token: str | None = WEBHOOK_TOKEN):
    url = case.path + (f"?token={token}" if token is not None else "")
    if case.as_json:
        return client.post(url, data=json.dumps(case.body), content_type="application/json", headers=case.headers)
    return client.post(url, data=case.body, headers=case.headers)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.label)
def test_callback(client, redis_client, case: Case) -> None:
    response = _post(client, case)
    assert response.status_code == case.status, response.get_data(as_text=True)
    assert case.body_has in response.get_data(as_text=True)
    if case.status >= 400:
        assert response.is_json and "error" in response.get_json()
    queued = [inbox.InboxItem.from_json(raw) for raw in redis_client.lrange(inbox.INBOX, 0, -1)]
    if case.queued_kind is None:
        assert queued == []
    else:
        assert [item.kind for item in queued] == [case.queued_kind]
        assert queued[0].data == {k: str(v) for k, v in case.body.items()}


@pytest.mark.parametrize("path", ["/dlr", "/receiveSMS", "/ussd", "/voice"])
@pytest.mark.parametrize("token", [None, "", "wrong-token"])
def test_missing_or_wrong_token_is_403(client, redis_client, path: str, token: str | None) -> None:
    case = Case("x", path, wire.dlr(MSG_ID, "Success", CUSTOMER))
    response = _post(client, case, token=token)
    assert response.status_code == 403
    assert response.get_json() == {"error": "forbidden: missing or wrong token"}
    assert redis_client.llen(inbox.INBOX) == 0


def test_voice_callback_through_communicate_needs_token(client) -> None:
    case = Case("x", "/communicate", wire.voice_active(SESSION, CUSTOMER, AT_NUMBER))
    assert _post(client, case, token="wrong-token").status_code == 403
    # No credentials at all: the body is not read, so the answer names both (an operator send's 401).
    response = _post(client, case, token=None)
    assert response.status_code == 401
    assert "?token=" in response.get_json()["error"] and "bearer token" in response.get_json()["error"]


class WatchedBody(io.BytesIO):
    """A request body that notes whether the app read any of it."""

    read_from = False

    def read(self, size: int | None = -1) -> bytes:
        self.read_from = True
        return super().read(size)

    def readinto(self, buffer: Any) -> int:
        self.read_from = True
        return super().readinto(buffer)

    def readline(self, size: int | None = -1) -> bytes:
        self.read_from = True
        return super().readline(size)


@pytest.mark.parametrize(
    ("query", "headers", "status"),
    [("", {}, 401), ("?token=wrong-token", {}, 403), ("", {"Authorization": "Bearer wrong-token"}, 401)],
    ids=["none", "wrong-token", "wrong-bearer"],
)
@pytest.mark.parametrize(
    "body",
    [wire.voice_active(SESSION, CUSTOMER, AT_NUMBER), _seed("communicate_send")],
    ids=["voice", "send"],
)
def test_communicate_refuses_strangers_before_reading_their_body(client, redis_client, query, headers, status, body):
    """Whichever the body would be, without a valid credential it is never read: a client trickling it holds
    no worker (issue 12)."""
    raw = json.dumps(body).encode()
    stream = WatchedBody(raw)
    response = client.post(
        f"/communicate{query}",
        input_stream=stream,
        content_length=len(raw),
        content_type="application/json",
        headers=headers,
    )
    assert not stream.read_from, "the body was read before the credentials were checked"
    assert response.status_code == status
    assert isinstance(response.get_json()["error"], str)
    assert redis_client.llen(inbox.INBOX) == 0


def test_oversized_body_is_413(client, redis_client) -> None:
    body = wire.incoming_sms(CUSTOMER, "21512", "x" * 70_000, "big")
    response = client.post(f"/receiveSMS?token={WEBHOOK_TOKEN}", data=body)
    assert response.status_code == 413
    assert response.get_json() == {"error": "request body too large"}
    assert redis_client.llen(inbox.INBOX) == 0


@pytest.mark.parametrize(
    ("data", "content_type", "message"),
    [
        ("{not json", "application/json", "body is not valid JSON"),
        ("[1, 2]", "application/json", "JSON body must be an object"),
        (
            '{"id": {"nested": 1}, "status": "Success", "phoneNumber": "+254711000001"}',
            "application/json",
            "field must be a string: id",
        ),
        ("<xml/>", "application/xml", "unsupported content type application/xml"),
    ],
)
def test_malformed_body_is_400(client, data: str, content_type: str, message: str) -> None:
    response = client.post(f"/dlr?token={WEBHOOK_TOKEN}", data=data, content_type=content_type)
    assert response.status_code == 400
    assert message in response.get_json()["error"]


def test_non_utf8_form_bytes_are_kept(client, redis_client) -> None:
    body = b"from=%2B254711000001&to=21512&id=bytes-1&text=caf%E9+%FF"
    response = client.post(
        f"/receiveSMS?token={WEBHOOK_TOKEN}", data=body, content_type="application/x-www-form-urlencoded"
    )
    assert response.status_code == 200
    item = inbox.InboxItem.from_json(redis_client.lindex(inbox.INBOX, 0))
    assert item.data["text"].startswith("caf")


def test_live_voice_answer_is_xml_with_escaped_script(client, redis_client) -> None:
    from shared import voice_script

    voice_script.remember(redis_client, "Pay <now> & save", phone=CUSTOMER, session_id=SESSION)
    response = _post(client, Case("x", "/voice", wire.voice_active(SESSION, CUSTOMER, AT_NUMBER)))
    body = response.get_data(as_text=True)
    assert response.mimetype == "application/xml"
    assert body.startswith('<?xml version="1.0" encoding="UTF-8"?><Response>')
    assert "Pay &lt;now&gt; &amp; save" in body
    assert "<GetDigits" in body and "press 1" in body


def test_redis_down_answers_503_and_never_200(make_app) -> None:
    """Every callback the receiver cannot keep is a 503 for AT to retry, but a live call: a customer is on
    the line, so it is answered (from Postgres: tests/test_voice_without_redis.py)."""
    client = make_app(redis_url=f"redis://127.0.0.1:{free_port()}/0").test_client()
    for case in CASES:
        if case.status == 200:
            response = _post(client, case)
            if case.body.get("isActive") == "1":
                assert response.status_code == 200 and response.mimetype == "application/xml", case.label
                continue
            assert response.status_code == 503, case.label
            assert "retry later" in response.get_json()["error"]


def test_healthz(client) -> None:
    assert client.get("/healthz").get_json() == {"status": "ok"}


def test_readyz_when_everything_is_up(client) -> None:
    response = client.get("/readyz")
    assert response.status_code == 200
    assert response.get_json()["database"] == "ok" and response.get_json()["broker"] == "ok"


def test_readyz_names_what_is_down(make_app) -> None:
    response = make_app(redis_url=f"redis://127.0.0.1:{free_port()}/0").test_client().get("/readyz")
    assert response.status_code == 503
    assert response.get_json() == {"status": "not ready", "database": "ok", "broker": "down"}


def test_unknown_route_is_json_404(client) -> None:
    response = client.get("/nope")
    assert response.status_code == 404 and response.get_json() == {"error": "not found"}


def test_a_kept_callback_is_200_even_when_the_drainer_cannot_be_woken(make_app, redis_client) -> None:
    """Redis took the callback, then the broker went away before the wake-up task was sent (seen when
    Redis was killed mid-load): the answer must still say kept, not 500; beat's drain tick applies it."""
    app = make_app()
    app.extensions["reach"].celery.conf.broker_url = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens
    redis_client.delete(inbox.NUDGE)
    response = app.test_client().post(
        f"/dlr?token={WEBHOOK_TOKEN}", data=wire.dlr("ATXid_wake", "Success", "+254711000001")
    )
    assert response.status_code == 200, response.get_data(as_text=True)
    [kept] = redis_client.lrange(inbox.INBOX, 0, -1)
    assert json.loads(kept)["id"] == response.json["id"]
