"""Hostile JSON bodies on every endpoint that reads one: nesting 1,000 deep, number literals Python's `json`
accepts but JSON does not (`NaN`, `Infinity`), numbers no column can hold (`1e999`, 10**400).

Each is a 400 naming the problem, answered before anything is queued or written, and never a traceback in
the log (one `web.bodies.read_json` reads every JSON body). The Flask test client is enough here: JSON is
parsed by the app, not the HTTP server (tests/test_chunked_bodies.py covers what the server parses).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest
import redis as redis_lib
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from shared.broker import QUEUES
from shared.models import Contact, Cycle, Message, Schedule
from tests.conftest import API_TOKEN, WEBHOOK_TOKEN
from web.bodies import MAX_JSON_DEPTH

AUTH = {"Authorization": f"Bearer {API_TOKEN}"}
TOKEN = f"?token={WEBHOOK_TOKEN}"
DEPTH_ERROR = f"JSON nested deeper than {MAX_JSON_DEPTH} levels"

#: Every endpoint that takes a JSON body, with the credentials it needs and a valid body to hide things in.
JSON_ENDPOINTS: list[tuple[str, dict[str, str], dict[str, Any]]] = [
    (f"/communicate{TOKEN}", {}, {"sessionId": "ATVId_1", "isActive": "0"}),
    ("/communicate", AUTH, {"to": "+254711000001", "message": "hi"}),
    ("/api/contacts", AUTH, {"contacts": [{"phone": "+254711000001"}]}),
    ("/api/cycles", AUTH, {"message": "hi"}),
    ("/api/schedules", AUTH, {"name": "n", "cron": "0 9 * * 1", "message": "hi"}),
    (f"/ussd{TOKEN}", {}, {"sessionId": "ATUid_1", "phoneNumber": "+254711000001", "text": ""}),
    (f"/voice{TOKEN}", {}, {"sessionId": "ATVId_1", "isActive": "0"}),
    (f"/dlr{TOKEN}", {}, {"id": "ATXid_1", "status": "Success"}),
    (f"/receiveSMS{TOKEN}", {}, {"from": "+254711000001", "to": "21512", "id": "in-1"}),
]
IDS = [path.partition("?")[0] + (" (operator)" if headers else "") for path, headers, _ in JSON_ENDPOINTS]


def post_raw(client: Any, path: str, headers: dict[str, str], body: str) -> Any:
    return client.post(path, data=body.encode(), headers={**headers, "Content-Type": "application/json"})


def assert_refused(response: Any, error: str, caplog: pytest.LogCaptureFixture) -> None:
    assert (response.status_code, response.get_json()) == (400, {"error": error})
    assert [r for r in caplog.records if r.levelno >= logging.ERROR] == []


def nothing_written(session: Any) -> bool:
    counts = [session.scalar(select(func.count()).select_from(t)) for t in (Contact, Cycle, Message, Schedule)]
    return counts == [0, 0, 0, 0]


def nested(depth: int, leaf: str = "1") -> str:
    """`depth` levels: arrays and objects alternating, so both kinds of nesting count."""
    opened = "".join("[" if level % 2 else '{"k":' for level in range(depth))
    closed = "".join("]" if level % 2 else "}" for level in reversed(range(depth)))
    return opened + leaf + closed


# -- nesting --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("path", "headers", "valid"), JSON_ENDPOINTS, ids=IDS)
def test_json_nested_1000_deep_is_a_400_naming_the_depth(
    client: Any, session: Any, caplog: pytest.LogCaptureFixture, path: str, headers: dict, valid: dict
) -> None:
    """Was a 500 with a RecursionError traceback on each (issue 12): as the whole body or in a field."""
    deep = nested(1000)
    for body in (deep, '{"x": ' + deep + ", " + json.dumps(valid)[1:]):
        assert_refused(post_raw(client, path, headers, body), DEPTH_ERROR, caplog)
    assert nothing_written(session)


def test_deep_json_on_communicate_without_credentials_answers_without_a_traceback(
    client: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """No credentials at all: a refusal (400, or 401 where credentials are checked before the body), never a
    500."""
    response = post_raw(client, "/communicate", {}, "[" * 1000 + "]" * 1000)
    assert response.status_code in {400, 401} and set(response.get_json()) == {"error"}
    assert [r for r in caplog.records if r.levelno >= logging.ERROR] == []


@pytest.mark.parametrize(("depth", "error"), [
    (MAX_JSON_DEPTH - 1, "field dry_run must be a JSON boolean (true or false), not an object"),
    (MAX_JSON_DEPTH, "field dry_run must be a JSON boolean (true or false), not an object"),
    (MAX_JSON_DEPTH + 1, DEPTH_ERROR),
])  # fmt: skip
def test_json_up_to_the_depth_limit_is_read(client: Any, session: Any, depth: int, error: str) -> None:
    """The body itself is one level: `dry_run` nested `depth - 1` deep is read and judged as a field."""
    body = '{"message": "hi", "dry_run": ' + nested(depth - 1) + "}"
    response = post_raw(client, "/api/cycles", AUTH, body)
    assert (response.status_code, response.get_json()) == (400, {"error": error})
    assert nothing_written(session)


def test_brackets_inside_strings_are_not_nesting(client: Any, session: Any) -> None:
    message = "[{" * 500 + ' \\" ' + "]}" * 500
    response = post_raw(client, "/api/cycles", AUTH, '{"message": "' + message + '", "dry_run": true}')
    assert response.status_code == 400 and "too long" in response.get_json()["error"]  # read, then judged


# -- number literals ------------------------------------------------------------------------------------------

NUMBER_LITERALS = {
    "NaN": "NaN is not a JSON number",
    "Infinity": "Infinity is not a JSON number",
    "-Infinity": "-Infinity is not a JSON number",
    "1e999": "number out of range: 1e999",
    "1E+400": "number out of range: 1E+400",
    "-1e999999": "number out of range: -1e999999",
    "1" + "0" * 400: "number out of range: 1000000000000000000000…",
    "9" * 5000: "number out of range: 9999999999999999999999…",
}


@pytest.mark.parametrize(("path", "headers", "valid"), JSON_ENDPOINTS, ids=IDS)
def test_number_literals_json_has_no_room_for_are_a_400(
    client: Any, session: Any, caplog: pytest.LogCaptureFixture, path: str, headers: dict, valid: dict
) -> None:
    """`json.loads` turns `NaN`, `Infinity` and `1e999` into floats no JSON encoder may write back, and 10**400
    into an integer no column holds: refused where the body is read, whichever field they are in."""
    for literal, error in NUMBER_LITERALS.items():
        body = '{"extra": ' + literal + ", " + json.dumps(valid)[1:]
        assert_refused(post_raw(client, path, headers, body), error, caplog)
    assert nothing_written(session)


@pytest.mark.parametrize("literal", ["-0", "-0.0", "1e-400", "0.5", "-9223372036854775807", "1.5e308"])
def test_ordinary_numbers_are_still_read(client: Any, session: Any, literal: str) -> None:
    body = '{"sessionId": "ATVId_1", "isActive": "0", "durationInSeconds": ' + literal + "}"
    response = post_raw(client, f"/voice{TOKEN}", {}, body)
    assert response.status_code == 200, response.get_json()


# -- fuzz: hostile shapes anywhere in a body -------------------------------------------------------------------


@pytest.fixture
def published_queues(clean: None, redis_client: redis_lib.Redis) -> Iterator[None]:
    """Sends and cycles the fuzz happens to start are handed to Celery: removed after it, so no later worker
    acts on them."""
    yield
    redis_client.delete(*QUEUES)


#: Leaves no endpoint may accept, wherever they are: not JSON, out of range, too deep.
UNREADABLE = [
    "NaN",
    "Infinity",
    "-Infinity",
    "1e999999",
    "1E+400",
    "1" + "0" * 30,
    nested(MAX_JSON_DEPTH),
    nested(1000),
]
#: Leaves that are JSON, some of them where the field wants another type ("true" for a boolean).
READABLE = ["-0", "-0.0", "1e-999", '"true"', '"false"', '"1"', "true", "false", "0", "1", "null", '"NaN"', "[]", "{}",
            nested(3)]  # fmt: skip
HOSTILE = settings(
    max_examples=60,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@HOSTILE
@given(endpoint=st.sampled_from(JSON_ENDPOINTS), leaves=st.dictionaries(
    st.sampled_from(["message", "dry_run", "voice_message", "to", "contacts", "name", "cron", "isActive", "id"]),
    st.sampled_from(UNREADABLE + READABLE), min_size=1, max_size=4,
))  # fmt: skip
def test_hostile_leaves_in_any_field_are_refused_and_never_a_server_error(
    client: Any, published_queues: None, caplog: pytest.LogCaptureFixture, endpoint: tuple, leaves: dict[str, str]
) -> None:
    """Deep nesting, huge exponents, NaN and Infinity, strings where booleans go, in any field of any JSON
    body: a 400 if any is unreadable or has the wrong type for an operator field, never a 5xx or a
    traceback."""
    path, headers, valid = endpoint
    fields = {key: json.dumps(value) for key, value in valid.items()} | leaves
    body = "{" + ", ".join(f'"{key}": {value}' for key, value in fields.items()) + "}"
    response = post_raw(client, path, headers, body)
    assert response.status_code < 500, response.get_data(as_text=True)
    if response.status_code >= 400:
        assert set(response.get_json()) == {"error"}
    if any(leaf in UNREADABLE for leaf in leaves.values()):
        assert response.status_code == 400, response.get_data(as_text=True)
    elif path == "/api/cycles" and leaves.get("dry_run", "null") not in {"true", "false", "null"}:
        assert response.status_code == 400 and "dry_run" in response.get_json()["error"]
    assert [r for r in caplog.records if r.levelno >= logging.ERROR] == []
