"""The OpenAPI document (web/openapi.yaml) is the receiver's whole HTTP surface, and the live receiver
(real Redis and Postgres behind it) keeps to it: schemathesis generates requests from the document and
every answer must be documented, match its schema, and never be a 5xx."""

from __future__ import annotations

import re
from typing import Any

import pytest
import redis as redis_lib
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from shared.broker import QUEUES
from tests.conftest import API_TOKEN, WEBHOOK_TOKEN
from web.openapi import document

AUTH = {"Authorization": f"Bearer {API_TOKEN}"}
#: What the live run checks: nothing undocumented, nothing off-schema, no server error.
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
EXAMPLES_PER_OPERATION = 30


#: Blueprints that serve HTML pages to people, not an API: the dashboard, its sign-in and its pages about one
#: cycle or contact (tests/test_dashboard.py, test_dashboard_auth.py, test_dashboard_cycles.py,
#: test_dashboard_pages.py).
HTML_BLUEPRINTS = {"dashboard", "dashboard_auth", "dashboard_cycles", "dashboard_pages"}


def flask_routes(app: Any) -> set[tuple[str, str]]:
    """(METHOD, OpenAPI path) for every API route of the app; `<int:cycle_id>` becomes `{cycle_id}`."""
    routes = set()
    for rule in app.url_map.iter_rules():
        if rule.endpoint.partition(".")[0] in HTML_BLUEPRINTS:
            continue
        path = re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule.rule)
        for method in rule.methods - {"HEAD", "OPTIONS"}:
            routes.add((method, path))
    return routes


def documented() -> set[tuple[str, str]]:
    methods = {"get", "post", "put", "patch", "delete"}
    return {(m.upper(), path) for path, item in document()["paths"].items() for m in item if m in methods}


def test_every_route_is_documented_and_every_documented_path_is_a_route(app: Any) -> None:
    assert flask_routes(app) == documented()


def test_the_document_is_served_without_credentials(client: Any) -> None:
    response = client.get("/api/openapi.json")
    assert response.status_code == 200
    assert response.json == document()
    assert response.json["openapi"].startswith("3.")
    assert client.get("/api/contacts").status_code == 401  # the rest of /api still needs the token


def test_every_operation_documents_its_errors_and_security() -> None:
    doc = document()
    for path, item in doc["paths"].items():
        for method, operation in item.items():
            responses = operation["responses"]
            assert any(code.startswith("2") for code in responses), (method, path)
            security = operation.get("security", doc["security"])
            schemes = {name for requirement in security for name in requirement}
            if "bearerAuth" in schemes:
                assert "401" in responses, (method, path)
            if "webhookToken" in schemes:
                assert "403" in responses, (method, path)
            if "requestBody" in operation:
                assert "400" in responses, (method, path)


def test_the_document_loads_as_openapi() -> None:
    schema = schemathesis.openapi.from_dict(document())
    schema.validate()  # against the OpenAPI 3.0 meta-schema
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) == len(documented())


# -- schemathesis against the live receiver ------------------------------------------------------------------


@pytest.fixture
def published_queues(clean: None, redis_client: redis_lib.Redis) -> Any:
    """Celery messages the run publishes are removed after it (no worker runs here), so no later worker
    acts on fuzzed sends and cycles; `clean` empties the tables and the inbox before it."""
    yield
    redis_client.delete(*QUEUES)


#: The document the receiver serves (test_the_document_is_served_without_credentials), loaded here so
#: pytest can name one test per operation; requests go to the live receiver.
schema = schemathesis.openapi.from_dict(document())


@schema.parametrize()
@settings(
    max_examples=EXAMPLES_PER_OPERATION,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    database=None,
)
def test_live_receiver_keeps_to_the_document(case: Any, receiver: str, published_queues: None) -> None:
    case.call_and_validate(base_url=receiver, headers=AUTH, params={"token": WEBHOOK_TOKEN}, checks=CHECKS, timeout=10)


# -- what schemathesis found, kept as plain regression tests -------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/api/cycles/9223372036854775808"),  # one past bigint: was a 500 (Postgres out of range)
        ("POST", "/api/cycles/9223372036854775808/resume"),
        ("GET", "/api/cycles/0"),
        ("POST", "/api/cycles/999/resume"),  # was a 400
    ],
)
def test_cycle_ids_out_of_range_or_unknown_are_404(client: Any, method: str, path: str) -> None:
    response = client.open(path, method=method, headers=AUTH)
    assert response.status_code == 404
    assert set(response.json) == {"error"}


@pytest.mark.parametrize(
    ("path", "body", "error"),
    [
        # was a 500 (Postgres text cannot hold NUL); messages go through the one message rule (check_message)
        ("/api/cycles", {"message": "\x00hi"}, "message has a character AT cannot speak: U+0000 at position 1"),
        (
            "/api/cycles",
            {"message": "hi", "voice_message": "a\x00"},
            "voice_message has a character AT cannot speak: U+0000 at position 2",
        ),
        (
            "/api/schedules",
            {"name": "n\x00", "cron": "0 9 * * 1", "message": "hi"},
            "field name must not contain NUL characters",
        ),
        (
            "/api/schedules",
            {"name": "n", "cron": "0 9 * * 1", "message": "hi", "timezone": "UTC\x00"},
            "field timezone must not contain NUL characters",
        ),
    ],
)
def test_nul_in_operator_text_is_a_400(client: Any, session: Any, path: str, body: dict[str, Any], error: str) -> None:
    from sqlalchemy import func, select

    from shared.models import Cycle, Schedule

    response = client.post(path, json=body, headers=AUTH)
    assert response.status_code == 400
    assert response.json == {"error": error}
    assert session.scalar(select(func.count()).select_from(Cycle)) == 0
    assert session.scalar(select(func.count()).select_from(Schedule)) == 0


def test_nul_in_a_contact_name_refuses_that_row(client: Any, session: Any) -> None:
    rows = [{"phone": "+254711000001", "name": "Amina\x00"}, {"phone": "+254711000002", "name": "Brian"}]
    response = client.post("/api/contacts", json=rows, headers=AUTH)
    assert response.status_code == 200
    assert response.json["created"] == 1
    assert response.json["refused"] == [
        {"row": 1, "phone": "+254711000001", "reason": "name must not contain NUL characters"}
    ]


# -- security as the document states it ----------------------------------------------------------------------


def operations_secured_by(scheme: str) -> list[tuple[str, str]]:
    """(METHOD, concrete path) of every operation whose only security is `scheme`."""
    doc = document()
    found = []
    for path, item in doc["paths"].items():
        for method, operation in item.items():
            security = operation.get("security", doc["security"])
            if security == [{scheme: []}]:
                found.append((method.upper(), re.sub(r"\{[^}]+\}", "1", path)))
    return found


@pytest.mark.parametrize(("method", "path"), operations_secured_by("bearerAuth"), ids=" ".join)
@pytest.mark.parametrize(
    "authorization", [None, "Bearer wrong-token", f"Basic {API_TOKEN}"], ids=["none", "wrong", "basic"]
)
def test_operator_operations_answer_401_without_the_bearer_token(
    client: Any, method: str, path: str, authorization: str | None
) -> None:
    headers = {"Authorization": authorization} if authorization else {}
    response = client.open(path, method=method, headers=headers, json={})
    assert response.status_code == 401
    assert set(response.json) == {"error"}


@pytest.mark.parametrize(("method", "path"), operations_secured_by("webhookToken"), ids=" ".join)
@pytest.mark.parametrize("query", ["", "?token=wrong"], ids=["none", "wrong"])
def test_callbacks_answer_403_without_the_webhook_token(client: Any, method: str, path: str, query: str) -> None:
    response = client.open(f"{path}{query}", method=method, data={"sessionId": "s", "isActive": "0"})
    assert response.status_code == 403
    assert response.json == {"error": "forbidden: missing or wrong token"}


def test_the_document_says_which_operations_need_which_credentials() -> None:
    assert len(operations_secured_by("bearerAuth")) == 19  # every /api operation but the document itself
    assert {path for _, path in operations_secured_by("webhookToken")} == {"/dlr", "/receiveSMS", "/ussd", "/voice"}


# -- the document's types are what the operator API takes (issue 12) -------------------------------------------

#: A value of each JSON type; a string that looks like a boolean or a number, as scripts send them.
SAMPLES = {"string": "true", "boolean": True, "integer": 1, "number": 1.5, "array": ["x"], "object": {"x": 1}}


def operator_object_bodies() -> list[tuple[str, str, dict[str, Any]]]:
    """(method, path, schema) of each operator operation whose JSON body is a documented object."""
    doc = document()
    found = []
    for path, item in doc["paths"].items():
        for method, operation in item.items():
            content = operation.get("requestBody", {}).get("content", {})
            schema = content.get("application/json", {}).get("schema", {})
            if operation.get("security", doc["security"]) == [{"bearerAuth": []}] and schema.get("type") == "object":
                found.append((method, path, schema))
    return found


def example_body(schema: dict[str, Any]) -> dict[str, Any]:
    """The required properties, each its example or a plain value of its type."""
    plain = {"string": "hi", "boolean": True}
    return {name: schema["properties"][name].get("example", plain[schema["properties"][name]["type"]])
            for name in schema.get("required", [])}  # fmt: skip


#: The contact the operations on `/api/contacts/{phone}` act on.
EXAMPLE_PHONE = "+254711000090"


@pytest.mark.parametrize(
    ("method", "path", "schema"), operator_object_bodies(), ids=[f"{m} {p}" for m, p, _ in operator_object_bodies()]
)
def test_each_documented_body_property_refuses_every_other_json_type(
    client: Any, published_queues: None, session: Any, method: str, path: str, schema: dict[str, Any]
) -> None:
    """What the document says a field is, is the only type the API takes: anything else (null where it is
    not nullable, a field it does not list) is a 400 naming the field, and nothing is created or changed."""
    from sqlalchemy import func, select

    from shared.models import Contact, Cycle, Schedule

    if "{phone}" in path:
        added = client.post("/api/contacts", json=[{"phone": EXAMPLE_PHONE, "name": "Amina"}], headers=AUTH)
        assert added.status_code == 200
        path = path.replace("{phone}", EXAMPLE_PHONE)
    send = getattr(client, method)
    for name, prop in schema["properties"].items():
        # a field of one of several types (`voice_message`: text, or texts by language) documents them in `oneOf`
        allowed = {prop["type"]} if "type" in prop else {choice["type"] for choice in prop["oneOf"]}
        wrong = {kind: value for kind, value in SAMPLES.items() if kind not in allowed}
        if not prop.get("nullable"):
            wrong["null"] = None
        for kind, value in wrong.items():
            response = send(path, json={**example_body(schema), name: value}, headers=AUTH)
            assert response.status_code == 400 and name in response.json["error"], (name, kind, response.json)
    if schema.get("additionalProperties") is False:
        response = send(path, json={**example_body(schema), "dryRun": True}, headers=AUTH)
        assert response.status_code == 400 and "dryRun" in response.json["error"]
    assert session.scalar(select(func.count()).select_from(Cycle)) == 0
    assert session.scalar(select(func.count()).select_from(Schedule)) == 0
    assert session.scalar(select(Contact.name).where(Contact.phone == EXAMPLE_PHONE)) in {None, "Amina"}


def bounded_query_integers() -> list[tuple[str, str, int, int]]:
    """(path, name, minimum, maximum) of each documented integer query parameter of an operator GET."""
    found = []
    for path, item in document()["paths"].items():
        for parameter in item.get("get", {}).get("parameters", []):
            schema = parameter.get("schema", {})
            if parameter.get("in") == "query" and schema.get("type") == "integer":
                found.append((path, parameter["name"], schema["minimum"], schema["maximum"]))
    return found


@pytest.mark.parametrize(("path", "name", "low", "high"), bounded_query_integers())
def test_each_documented_query_integer_takes_its_range_and_nothing_else(
    client: Any, session: Any, path: str, name: str, low: int, high: int
) -> None:
    for value in [low - 1, high + 1, "1e3", "true", "1.5", "-0", "NaN", "9" * 30]:
        response = client.get(path, query_string={name: value}, headers=AUTH)
        assert response.status_code == 400 and name in response.json["error"], value
    for value in [low, high]:
        assert client.get(path, query_string={name: value}, headers=AUTH).status_code == 200
