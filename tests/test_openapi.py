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


#: Blueprints that serve HTML pages to people, not an API: the dashboard and its sign-in
#: (tests/test_dashboard.py, tests/test_dashboard_auth.py, tests/test_dashboard_cycles.py).
HTML_BLUEPRINTS = {"dashboard", "dashboard_auth", "dashboard_cycles"}


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
    assert len(operations_secured_by("bearerAuth")) == 12  # every /api operation but the document itself
    assert {path for _, path in operations_secured_by("webhookToken")} == {"/dlr", "/receiveSMS", "/ussd", "/voice"}
