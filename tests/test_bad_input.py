"""Bad input from the outside world: fuzzed bodies, oversize bodies, odd bytes and odd phone numbers.

The fuzz goes to the real receiver over HTTP (real Redis behind it), with a timeout on every request: a
5xx or a hang fails. What "verbatim" means for text we store (README, Security):

- text that is valid UTF-8 (emoji, quotes, SQL-looking text) is stored exactly as sent, in the typed
  table (`incoming_sms.text`, `ussd_sessions.last_text`) and in `raw_callbacks.payload`;
- in a form body (what AT sends), each byte that is not part of valid UTF-8 is kept as its `%XX` escape
  (Werkzeug's decoding): "caf\\xe9" is stored as "caf%E9", so the bytes sent can still be read back;
  a JSON body that is not UTF-8 is refused with 400, as is any body that is not JSON or form fields;
- NUL and lone surrogates (which Postgres text and JSONB cannot hold) become U+FFFD, in every field and
  field name, so a callback Reach accepted with 200 can always be stored.
"""

from __future__ import annotations

import json
import os
from typing import Any
from urllib.parse import quote_from_bytes

import pytest
import redis as redis_lib
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from shared.callbacks import storable
from shared.models import Contact, IncomingSms, RawCallback, UssdSession
from shared.phone import InvalidPhone, normalise_phone
from tests.conftest import API_TOKEN, WEBHOOK_TOKEN

CUSTOMER = "+254711000001"
DEAD_LETTERS = "reach:inbox:dead"
TIMEOUT = 10  # seconds for any one request: a hang fails the test
FUZZ = settings(
    max_examples=int(os.environ.get("REACH_FUZZ_EXAMPLES", "60")),
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

CALLBACKS = ["/dlr", "/receiveSMS", "/ussd", "/voice", "/communicate"]
OPERATOR = [
    ("POST", "/api/contacts"),
    ("GET", "/api/contacts"),
    ("GET", "/api/contacts/0711000001"),
    ("POST", "/api/cycles"),
    ("GET", "/api/cycles"),
    ("GET", "/api/cycles/1"),
    ("POST", "/api/cycles/1/resume"),
    ("POST", "/api/cycles/1/pause"),
    ("POST", "/api/cycles/1/cancel"),
    ("GET", "/api/schedules"),
    ("POST", "/api/schedules"),
    ("DELETE", "/api/schedules/x"),
]
CONTENT_TYPES = [
    None,
    "application/x-www-form-urlencoded",
    "application/json",
    "application/json; charset=latin-1",
    "multipart/form-data; boundary=zzz",
    "text/csv",
    "text/plain",
    "application/xml",
    "application/vnd.api+json",
    "\u00e9/\u00e9",
    "",
]
AT_FIELDS = ["id", "status", "phoneNumber", "from", "to", "text", "sessionId", "isActive", "message", "linkId",
             "callerNumber", "dtmfDigits", "amount", "durationInSeconds", "hangupCause", "networkCode"]  # fmt: skip

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)
#: Text with what Postgres cannot hold (NUL, lone surrogates) mixed in; st.text() never draws surrogates.
odd_text = st.lists(st.sampled_from(["\x00", "\ud800", "\udfff"]) | st.characters(), max_size=20).map("".join)
field_names = st.sampled_from(AT_FIELDS) | odd_text
field_values = st.sampled_from([CUSTOMER, "0711000001", "1", "0", "Success", "STOP", "", "1*2"]) | odd_text


#: A valid body per callback endpoint, for the fuzz to start from (so most bodies get past validation).
TEMPLATES = {
    "/dlr": {"id": "ATXid_1", "status": "Success", "phoneNumber": CUSTOMER},
    "/receiveSMS": {"from": CUSTOMER, "to": "21512", "id": "in-1", "text": "hi"},
    "/ussd": {"sessionId": "ATUid_1", "phoneNumber": CUSTOMER, "text": "1"},
    "/voice": {"sessionId": "ATVId_1", "isActive": "0", "callerNumber": CUSTOMER},
    "/communicate": {"sessionId": "ATVId_2", "isActive": "1", "callerNumber": CUSTOMER},
}


@st.composite
def bodies(draw: Any, path: str = "") -> tuple[bytes, str | None]:
    """A body and its content type: form fields, JSON (objects or not), or arbitrary bytes."""
    shape = draw(st.sampled_from(["form", "json", "bytes"]))
    matching = {"form": "application/x-www-form-urlencoded", "json": "application/json", "bytes": None}[shape]
    content_type = draw(st.just(matching) | st.sampled_from(CONTENT_TYPES))
    fields = dict(TEMPLATES.get(path, {})) if draw(st.booleans()) else {}
    if shape == "form":
        fields.update(draw(st.dictionaries(field_names, field_values, max_size=6)))
        raw_pairs = [
            (k.encode("utf-8", "surrogatepass"), v.encode("utf-8", "surrogatepass")) for k, v in fields.items()
        ]
        body = "&".join(f"{quote_from_bytes(k)}={quote_from_bytes(v)}" for k, v in raw_pairs).encode()
    elif shape == "json":
        fields.update(draw(st.dictionaries(field_names, field_values | json_values, max_size=6)))
        doc = fields if fields or draw(st.booleans()) else draw(json_values)
        body = json.dumps(doc).encode()
    else:
        body = draw(st.binary(max_size=300))
    return body, content_type


headers_strategy = st.fixed_dictionaries(
    {},
    optional={
        "Authorization": st.sampled_from([f"Bearer {API_TOKEN}", "Bearer", "Basic abc", "Bearer wrong", "bearer  "]),
        "X-Forwarded-For": st.sampled_from(["1.2.3.4", "garbage", ""]),
        "Accept": st.sampled_from(["*/*", "text/html", "application/xml"]),
        "Content-Encoding": st.sampled_from(["gzip", "identity", "br"]),
    },
)


def send(url: str, method: str, body: bytes, content_type: str | None, headers: dict[str, str]) -> requests.Response:
    headers = dict(headers)
    if content_type is not None:
        headers["Content-Type"] = content_type
    return requests.request(method, url, data=body, headers=headers, timeout=TIMEOUT)


def assert_handled(response: requests.Response, path: str) -> None:
    assert response.status_code < 500, (path, response.status_code, response.text[:300])
    if response.status_code >= 400:
        assert response.headers["Content-Type"].startswith("application/json"), response.text[:200]
        assert isinstance(response.json()["error"], str)


@pytest.fixture
def live_receiver(receiver: str, clean: None, redis_client: redis_lib.Redis) -> Any:
    yield receiver
    # Operator calls that happened to be valid queued work for workers that never run in this module.
    redis_client.delete("send", "cycle")


@FUZZ
@given(data=st.data(), path=st.sampled_from(CALLBACKS), headers=headers_strategy,
       token=st.sampled_from([WEBHOOK_TOKEN, WEBHOOK_TOKEN, "", "wrong", "\u00e9"]))  # fmt: skip
def test_callback_endpoints_never_fail_on_any_body(live_receiver, drain, redis_client, data, path, token, headers):
    body = data.draw(bodies(path))
    response = send(f"{live_receiver}{path}?token={quote_from_bytes(token.encode())}", "POST", *body, headers)
    assert_handled(response, path)
    if response.status_code == 200:  # accepted: it must also reach Postgres, not the dead letters
        drain()
        assert redis_client.llen(DEAD_LETTERS) == 0, redis_client.lrange(DEAD_LETTERS, 0, -1)


@FUZZ
@given(route=st.sampled_from(OPERATOR), body=bodies(), headers=headers_strategy,
       query=st.dictionaries(st.sampled_from(["status", "cursor", "limit"]), st.text(max_size=12)))  # fmt: skip
def test_operator_endpoints_never_fail_on_any_body(live_receiver, route, body, headers, query) -> None:
    method, path = route
    url = f"{live_receiver}{path}?" + "&".join(f"{k}={quote_from_bytes(v.encode())}" for k, v in query.items())
    assert_handled(send(url, method, *body, headers), path)


@pytest.mark.parametrize("path", CALLBACKS)
def test_an_oversize_callback_gets_413_json(live_receiver, path: str) -> None:
    body = b"text=" + b"x" * (64 * 1024 + 1)  # MAX_BODY_BYTES defaults to 64 KiB
    response = send(
        f"{live_receiver}{path}?token={WEBHOOK_TOKEN}", "POST", body, "application/x-www-form-urlencoded", {}
    )
    assert response.status_code == 413
    assert response.json() == {"error": "request body too large"}


def test_an_oversize_operator_upload_gets_413_json(live_receiver) -> None:
    body = b"phone,name\n" + b"0711000001,x\n" * (32 * 1024 * 1024 // 13 + 1)  # over the 32 MiB upload cap
    headers = {"Authorization": f"Bearer {API_TOKEN}"}
    response = send(f"{live_receiver}/api/contacts", "POST", body, "text/csv", headers)
    assert response.status_code == 413 and response.json() == {"error": "request body too large"}


def test_an_oversize_body_without_a_length_gets_413(live_receiver) -> None:
    chunks = (b"x" * 8192 for _ in range(10))  # chunked: no Content-Length to refuse it by
    url = f"{live_receiver}/dlr?token={WEBHOOK_TOKEN}"
    response = requests.post(url, data=chunks, headers={"Content-Type": "text/plain"}, timeout=TIMEOUT)
    assert response.status_code in {400, 413} and "error" in response.json()


# -- text kept verbatim, end to end ----------------------------------------------------------------------------

TEXTS = [
    "Asante sana 😀🇰🇪 ñ ü ß 中文 עברית",
    "'; DROP TABLE contacts; -- \" OR 1=1 /* */ $$ \\x00",
    "line one\nline two\ttab   spaces kept inside",
    "<script>alert(1)</script> &amp; %s {} {0} %(x)s",
]


def form(fields: dict[str, bytes]) -> bytes:
    return "&".join(f"{k}={quote_from_bytes(v)}" for k, v in fields.items()).encode()


def post_form(receiver: str, path: str, fields: dict[str, bytes]) -> requests.Response:
    url = f"{receiver}{path}?token={WEBHOOK_TOKEN}"
    return send(url, "POST", form(fields), "application/x-www-form-urlencoded", {})


def test_sms_and_ussd_text_is_stored_verbatim(live_receiver, session, drain) -> None:
    for n, text in enumerate(TEXTS):
        sms = {"from": CUSTOMER.encode(), "to": b"21512", "id": f"in-{n}".encode(), "text": text.encode()}
        assert post_form(live_receiver, "/receiveSMS", sms).status_code == 200
        ussd = {"sessionId": f"ATUid_{n}".encode(), "phoneNumber": CUSTOMER.encode(), "text": text.encode()}
        assert post_form(live_receiver, "/ussd", ussd).status_code == 200
    assert drain() == 2 * len(TEXTS)
    stored = {row.at_id: row.text for row in session.scalars(select(IncomingSms))}
    assert stored == {f"in-{n}": text.strip() for n, text in enumerate(TEXTS)}  # AT's fields are trimmed
    ussd_rows = {row.session_id: row.last_text for row in session.scalars(select(UssdSession))}
    assert ussd_rows == {f"ATUid_{n}": text.strip() for n, text in enumerate(TEXTS)}
    raw = [row.payload["text"] for row in session.scalars(select(RawCallback).order_by(RawCallback.id))]
    assert raw == [text for text in TEXTS for _ in range(2)]  # the audit copy is untouched, even untrimmed


@pytest.mark.parametrize(
    ("sent", "stored"),
    [
        (b"caf\xe9 au lait", "caf%E9 au lait"),  # Latin-1, not UTF-8
        (b"\xff\xfe\xfd", "%FF%FE%FD"),
        (b"ok \xf0\x9f\x98 cut emoji", "ok %F0%9F%98 cut emoji"),  # a truncated 4-byte sequence
        (b"\xed\xa0\x80 surrogate", "%ED%A0%80 surrogate"),  # UTF-8-encoded lone surrogate
        (b"\xe2\x82\xac \xe9", "\u20ac %E9"),  # the valid part decoded, the invalid byte kept
        (b"nul\x00inside", "nul\ufffdinside"),  # valid UTF-8, but Postgres text and JSONB cannot hold NUL
    ],
)
def test_bytes_that_are_not_utf8_are_stored_as_percent_escapes(
    live_receiver, session, drain, sent: bytes, stored: str
) -> None:
    sms = {"from": CUSTOMER.encode(), "to": b"21512", "id": b"in-bytes", "text": sent}
    assert post_form(live_receiver, "/receiveSMS", sms).status_code == 200
    ussd = {"sessionId": b"ATUid_bytes", "phoneNumber": CUSTOMER.encode(), "text": sent}
    assert post_form(live_receiver, "/ussd", ussd).status_code == 200
    assert drain() == 2
    assert session.scalars(select(IncomingSms)).one().text == stored
    assert session.scalars(select(UssdSession)).one().last_text == stored
    assert {row.payload["text"] for row in session.scalars(select(RawCallback))} == {stored}


def test_json_with_lone_surrogates_and_nul_is_stored_with_replacement(live_receiver, session, drain) -> None:
    body = '{"from": "+254711000001", "to": "21512", "id": "in-json", "text": "a\\ud800b\\u0000c", "x\\u0000": "1"}'
    response = send(f"{live_receiver}/receiveSMS?token={WEBHOOK_TOKEN}", "POST", body.encode(), "application/json", {})
    assert response.status_code == 200
    assert drain() == 1
    assert session.scalars(select(IncomingSms)).one().text == "a\ufffdb\ufffdc"
    assert session.scalars(select(RawCallback)).one().payload == {
        "from": CUSTOMER, "to": "21512", "id": "in-json", "text": "a\ufffdb\ufffdc", "x\ufffd": "1",
    }  # fmt: skip


def test_json_that_is_not_utf8_is_refused(live_receiver) -> None:
    body = b'{"from": "+254711000001", "to": "21512", "id": "x", "text": "caf\xe9"}'
    response = send(f"{live_receiver}/receiveSMS?token={WEBHOOK_TOKEN}", "POST", body, "application/json", {})
    assert response.status_code == 400 and "JSON" in response.json()["error"]


def test_storable_replaces_only_what_postgres_cannot_hold() -> None:
    assert storable("😀 ok \ufffd") == "😀 ok \ufffd"
    assert storable("a\x00b\ud800c\udfffd") == "a\ufffdb\ufffdc\ufffdd"


# -- phone numbers ---------------------------------------------------------------------------------------------

ARABIC_INDIC = str.maketrans("0123456789", "".join(chr(0x0660 + d) for d in range(10)))
FULL_WIDTH = str.maketrans("0123456789", "".join(chr(0xFF10 + d) for d in range(10)))
NORMALISED = {
    "+254 711 000 001": "+254711000001",
    "0711-000-001": "+254711000001",
    "0711.000.001": "+254711000001",
    "(0711) 000001": "+254711000001",
    "00254711000001": "+254711000001",
    "254711000001": "+254711000001",
    "0711000001": "+254711000001",
    "711000001": "+254711000001",
    "+254 (0) 711 000001": "+254711000001",
    " +254-711-000-001\t": "+254711000001",
    "+254711000001,": "+254711000001",
    "0711000001".translate(ARABIC_INDIC): "+254711000001",
    "+254711000001".translate(ARABIC_INDIC): "+254711000001",
    "0711000001".translate(FULL_WIDTH): "+254711000001",
    "+1 650 253 0000": "+16502530000",
    "+44 20 7946 0958": "+442079460958",
    "+255 754 123 456": "+255754123456",
    "0044 20 7946 0958": "+442079460958",
}
REFUSED = {
    "": "empty",
    "   ": "empty",
    "abc": "not a phone number",
    "0711 ABC 001": "letters",  # keypad letters would be someone else's number
    "+254711000001abc": "letters",
    "+254711000001 ext 5": "letters",
    "tel:+254711000001": "letters",
    "+2547110000011": "not a valid number",
    "07110000": "not a valid number",
    "+254 7110": "digits",
    "+0": "not a phone number",
    "+254711000001#": "not a phone number",
    "+254 800 000000": "not a personal number",
    "+999 711 000 001": "country code",
    "0711000001 0711000002": "too long",
    "0" * 41: "too long",
}


@pytest.mark.parametrize(("raw", "e164"), NORMALISED.items())
def test_odd_formats_normalise_to_e164(raw: str, e164: str) -> None:
    assert normalise_phone(raw, "KE") == e164


@pytest.mark.parametrize(("raw", "reason"), REFUSED.items())
def test_impossible_numbers_are_refused_with_a_reason(raw: str, reason: str) -> None:
    with pytest.raises(InvalidPhone, match=reason):
        normalise_phone(raw, "KE")


def test_every_format_through_the_operator_api(client, session, operator_headers) -> None:
    rows = [{"phone": raw} for raw in [*NORMALISED, *REFUSED]]
    response = client.post("/api/contacts", json=rows, headers=operator_headers)
    report = response.get_json()
    assert response.status_code == 200
    assert report["refused_count"] == len(REFUSED) + len(NORMALISED) - len(set(NORMALISED.values()))
    reasons = {r["phone"]: r["reason"] for r in report["refused"]}
    for raw, reason in REFUSED.items():
        assert reason in reasons[raw]
    assert set(session.scalars(select(Contact.phone))) == set(NORMALISED.values())


def test_every_format_through_the_cli_import(runner_env, session, tmp_path) -> None:
    from click.testing import CliRunner

    from reach_cli.main import cli

    source = tmp_path / "contacts.csv"
    raws = [*NORMALISED, *REFUSED]
    source.write_text("phone,name\n" + "".join(f'"{raw}",n{i}\n' for i, raw in enumerate(raws)), encoding="utf-8")
    result = CliRunner().invoke(cli, ["contacts", "import", str(source)])
    assert result.exit_code == 0, result.output
    assert set(session.scalars(select(Contact.phone))) == set(NORMALISED.values())
    refused = (tmp_path / "contacts.refused.csv").read_text(encoding="utf-8")
    for raw, reason in REFUSED.items():
        if raw.strip():  # the CSV reader keeps blank cells as they are; the reason is still "empty"
            assert raw in refused
        assert reason in refused


@pytest.fixture
def runner_env(clean: None) -> None:
    """The CLI reads the same environment as the rest of the session (conftest's `environment`)."""
