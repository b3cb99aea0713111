"""The operator API (design §4) end to end: the Flask test client, a real Postgres database, bearer tokens.

Here: authentication and cycles; contacts import in test_operator_api_import.py, one contact and listing in
test_operator_api_contacts.py, one-off sends in test_operator_api_send.py.
"""

from __future__ import annotations

import base64
from typing import Any

import pytest
from sqlalchemy import func, select

from shared.models import Contact, ContactStatus, Cycle, Message
from tests.conftest import API_TOKEN, SECOND_API_TOKEN
from tests.operator_api_support import SEED_PHONE, SEED_SEND, add_contact, bearer, error_of

# -- authentication ---------------------------------------------------------------------------------------

ROUTES: list[tuple[str, str, dict[str, Any]]] = [
    ("get", "/api/contacts", {}),
    ("get", f"/api/contacts/{SEED_PHONE}", {}),
    ("post", "/api/contacts", {"json": [{"phone": "0711000001"}]}),
    ("post", "/communicate", {"json": SEED_SEND}),
]
ROUTE_IDS = [f"{method} {path}" for method, path, _ in ROUTES]


def call(client: Any, method: str, path: str, kwargs: dict[str, Any], headers: dict[str, str]) -> Any:
    return getattr(client, method)(path, headers=headers, **kwargs)


@pytest.mark.parametrize(
    "headers",
    [
        {},
        bearer("not-the-token"),
        bearer(""),
        bearer(API_TOKEN + "x"),
        bearer(API_TOKEN[:-1]),
        # The raw comma-separated API_TOKEN value is not itself a token.
        bearer(f"{API_TOKEN},{SECOND_API_TOKEN}"),
        {"Authorization": f"Basic {API_TOKEN}"},
        {"Authorization": "Basic " + base64.b64encode(f"operator:{API_TOKEN}".encode()).decode()},
        {"Authorization": API_TOKEN},
    ],
    ids=["none", "wrong", "empty", "suffixed", "truncated", "whole-list", "basic-raw", "basic-userpass", "no-scheme"],
)
@pytest.mark.parametrize(("method", "path", "kwargs"), ROUTES, ids=ROUTE_IDS)
def test_without_a_valid_bearer_token_is_401(
    client, session, sent_tasks, method: str, path: str, kwargs: dict[str, Any], headers: dict[str, str]
) -> None:
    response = call(client, method, path, kwargs, headers)
    assert response.status_code == 401
    assert "bearer token" in error_of(response)
    assert session.scalar(select(func.count()).select_from(Contact)) == 0
    assert session.scalar(select(func.count()).select_from(Message)) == 0
    assert sent_tasks == []


@pytest.mark.parametrize("token", [API_TOKEN, SECOND_API_TOKEN], ids=["first", "rotated"])
@pytest.mark.parametrize("scheme", ["Bearer", "bearer"])
def test_each_configured_token_works(client, session, token: str, scheme: str) -> None:
    add_contact(session, SEED_PHONE)
    headers = {"Authorization": f"{scheme} {token}"}
    assert client.get("/api/contacts", headers=headers).status_code == 200
    assert client.get(f"/api/contacts/{SEED_PHONE}", headers=headers).status_code == 200
    response = client.post("/api/contacts", json=[{"phone": "0711000001"}], headers=headers)
    assert response.status_code == 200
    assert response.get_json()["created"] == 1


@pytest.mark.parametrize("headers", [{}, bearer(API_TOKEN), bearer("")], ids=["none", "old-token", "empty"])
@pytest.mark.parametrize(("method", "path", "kwargs"), ROUTES, ids=ROUTE_IDS)
def test_without_api_token_configured_the_api_is_disabled(
    make_app, session, method: str, path: str, kwargs: dict[str, Any], headers: dict[str, str]
) -> None:
    client = make_app(api_token="").test_client()
    response = call(client, method, path, kwargs, headers)
    assert response.status_code == 401
    assert "disabled" in error_of(response)
    assert "API_TOKEN" in error_of(response)
    assert session.scalar(select(func.count()).select_from(Contact)) == 0


def test_api_token_of_blanks_and_commas_also_disables_the_api(make_app, session) -> None:
    client = make_app(api_token=" , ,").test_client()
    response = client.get("/api/contacts", headers=bearer(""))
    assert response.status_code == 401
    assert "disabled" in error_of(response)


def test_cycle_start_with_the_broker_down_answers_its_id(make_app, operator_headers) -> None:
    from tests.conftest import free_port

    client = make_app(redis_url=f"redis://127.0.0.1:{free_port()}/0").test_client()
    response = client.post("/api/cycles", json={"message": "hello"}, headers=operator_headers)
    assert response.status_code == 202
    assert response.get_json()["id"] and "broker is unreachable" in response.get_json()["warning"]


def test_dry_run_checks_the_voice_message_too(client, operator_headers) -> None:
    body = {"message": "hi", "voice_message": "x" * 2000, "dry_run": True}
    response = client.post("/api/cycles", json=body, headers=operator_headers)
    assert response.status_code == 400 and "voice_message is too long" in response.get_json()["error"]


# -- cycles: the contract's integer counts (design §4, §4.1) --------------------------------------------------


@pytest.fixture
def audience(session) -> None:
    for phone, status in [
        ("+254711000101", ContactStatus.NEW),
        ("+254711000102", ContactStatus.ACTIVE),
        ("+254711000103", ContactStatus.INACTIVE),
        ("+254711000104", ContactStatus.OPTED_OUT),
        ("+254711000105", ContactStatus.INVALID),
        ("+254711000106", ContactStatus.INVALID),
    ]:
        add_contact(session, phone, status)
    session.commit()


def test_dry_run_and_cycle_answer_give_sms_voice_skipped_as_integers(client, session, audience, operator_headers):
    from shared import cycles
    from worker.cycles import plan_cycle

    dry = client.post("/api/cycles", json={"message": "hi", "dry_run": True}, headers=operator_headers).get_json()
    cycle_id = cycles.start_cycle(session, "hi")
    session.commit()
    plan_cycle(session, cycle_id)
    session.commit()
    report = client.get(f"/api/cycles/{cycle_id}", headers=operator_headers).get_json()

    for answer in (dry, report):
        assert {key: answer[key] for key in ("sms", "voice", "skipped")} == {"sms": 2, "voice": 1, "skipped": 3}
        assert all(type(answer[key]) is int for key in ("sms", "voice", "skipped"))
        assert answer["skipped_by_status"] == {"opted_out": 1, "invalid": 2}
    assert report["sms_detail"]["items"]["pending"] == 2 and report["voice_detail"]["items"]["pending"] == 1
    assert report["sms_detail"]["sent"] == 0 and report["voice_detail"]["not_answered"] == {}


@pytest.mark.parametrize("value", ["true", "yes", 1, 0, "false", [], {}])
def test_dry_run_that_is_not_a_json_boolean_is_a_400_and_starts_nothing(client, session, operator_headers, value):
    """design §4.1: `"dry_run": "true"` (a string) once started a real cycle to every contact."""
    response = client.post("/api/cycles", json={"message": "hi", "dry_run": value}, headers=operator_headers)
    assert response.status_code == 400
    assert "dry_run" in response.get_json()["error"] and "boolean" in response.get_json()["error"]
    assert session.scalar(select(func.count()).select_from(Cycle)) == 0


@pytest.mark.parametrize(("value", "status"), [(True, 200), (False, 202), (None, 202)])
def test_dry_run_booleans_and_null_keep_their_meaning(client, session, operator_headers, value, status) -> None:
    response = client.post("/api/cycles", json={"message": "hi", "dry_run": value}, headers=operator_headers)
    assert response.status_code == status, response.text
