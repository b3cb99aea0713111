"""`PATCH /api/contacts/<phone>` (design §4): name, tags, language, and an operator's opt-out or opt-in
recorded with who and when, ordered with the customer's own STOP and START by time. Tags are listed and
filtered (`GET /api/contacts?tag=`), on Postgres and on the embedded SQLite alike.

The Flask test client against the real Postgres; no worker (callbacks are applied in-process)."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import insert, select
from sqlalchemy.orm import Session

from shared import db
from shared.inbox import InboxItem, encode
from shared.models import Contact, ContactStatus, Cycle, CycleItem, CycleState, ItemState
from simulator import wire
from tests.conftest import API_TOKEN, SECOND_API_TOKEN
from worker import cycles, ingest

PHONE = "+254711000021"
OTHER = "+254711000022"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def patch(client: Any, phone: str, body: Any, token: str = API_TOKEN, **kwargs: Any) -> Any:
    return client.patch(f"/api/contacts/{phone}", json=body, headers=bearer(token), **kwargs)


def stored(phone: str = PHONE) -> Contact:
    with db._session_factory()() as session:
        return session.scalars(select(Contact).where(Contact.phone == phone)).one()


@pytest.fixture
def contact(session: Session) -> Contact:
    row = Contact(phone=PHONE, name="Amina", status=ContactStatus.ACTIVE)
    session.add(row)
    session.commit()
    return row


# -- fields ----------------------------------------------------------------------------------------------


def test_patch_changes_name_tags_and_language_and_answers_the_contact(client, contact) -> None:
    response = patch(client, "0711000021", {"name": "  Amina W. ", "tags": ["VIP", "nairobi", "vip"], "language": "SW"})

    assert response.status_code == 200, response.get_data(as_text=True)
    body = response.get_json()
    assert (body["phone"], body["name"], body["tags"], body["language"]) == (
        PHONE,
        "Amina W.",
        ["vip", "nairobi"],
        "sw",
    )
    assert body["status"] == "active"  # untouched
    for key in ("last_sms_status", "last_failure_reason", "last_call_status", "last_hangup_cause", "messages"):
        assert key in body
    assert client.get(f"/api/contacts/{PHONE}", headers=bearer(API_TOKEN)).get_json() == body
    row = stored()
    assert (row.name, row.tags, row.language) == ("Amina W.", ["vip", "nairobi"], "sw")


def test_get_shows_tags_as_a_list_and_language_even_when_unset(client, contact) -> None:
    body = client.get(f"/api/contacts/{PHONE}", headers=bearer(API_TOKEN)).get_json()
    assert (body["tags"], body["language"]) == ([], None)


def test_null_clears_name_and_language_and_an_empty_list_clears_tags(client, contact) -> None:
    assert patch(client, PHONE, {"tags": ["a"], "language": "en-ke"}).get_json()["language"] == "en-KE"
    body = patch(client, PHONE, {"name": None, "tags": [], "language": None}).get_json()
    assert (body["name"], body["tags"], body["language"]) == (None, [], None)


@pytest.mark.parametrize(
    ("body", "error"),
    [
        ({"nickname": "x"}, "unknown field: nickname"),
        ({"phone": "+254711000099"}, "unknown field: phone"),
        ({}, "nothing to change"),
        ([{"name": "x"}], "body must be a JSON object"),
        ({"name": 5}, "field name must be text or null, not a number"),
        ({"name": "x" * 201}, "field name is too long (201 characters; at most 200)"),
        ({"name": "Ami\nna"}, "field name has a control character U+000A at position 4"),
        ({"name": "Ami\x00na"}, "field name has a control character U+0000 at position 4"),
        ({"tags": "vip"}, "field tags must be a list of strings, not a string"),
        ({"tags": None}, "field tags must be a list of strings, not null"),
        ({"tags": ["vip", 3]}, "field tags[1] must be a string, not a number"),
        ({"tags": ["vip", "  "]}, "field tags[1] is empty"),
        ({"tags": ["x" * 51]}, "field tags[0] is too long (51 characters; at most 50)"),
        ({"tags": ["a\tb"]}, "field tags[0] has a control character U+0009 at position 2"),
        ({"tags": ["a;b"]}, "field tags[0] must not contain ';' or ','"),
        ({"tags": [f"t{i}" for i in range(51)]}, "field tags has 51 tags; at most 50"),
        ({"language": "english"}, "field language must be a language code such as sw or en"),
        ({"language": "xx"}, "field language must be a language code such as sw or en"),
        ({"language": 1}, "field language must be text or null, not a number"),
        ({"status": "active"}, "field status may only be set to opted_out or new"),
        ({"status": None}, "field status may only be set to opted_out or new"),
        ({"status": {"a": 1}}, "field status may only be set to opted_out or new"),  # was a 500 (schemathesis)
    ],
)
def test_bad_fields_are_a_400_naming_the_field(client, contact, body: Any, error: str) -> None:
    response = patch(client, PHONE, body)
    assert response.status_code == 400
    assert error in response.get_json()["error"]
    assert stored().name == "Amina"  # nothing changed


def test_a_body_that_is_not_json_is_a_400(client, contact) -> None:
    response = client.patch(
        f"/api/contacts/{PHONE}", data="name=x", content_type="text/plain", headers=bearer(API_TOKEN)
    )
    assert response.status_code == 400


def test_unknown_phone_is_404_and_a_bad_one_400(client, contact) -> None:
    assert patch(client, OTHER, {"name": "x"}).status_code == 404
    assert patch(client, "hello", {"name": "x"}).status_code == 400


def test_patch_needs_the_operator_token(client, contact) -> None:
    assert client.patch(f"/api/contacts/{PHONE}", json={"name": "x"}).status_code == 401


# -- an operator's opt-out and opt-in --------------------------------------------------------------------


def fingerprint(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()[:8]


def test_operator_opt_out_records_who_and_when_and_cancels_pending_items(client, session, contact) -> None:
    cycle = Cycle(message="hello", state=CycleState.PLANNING)
    session.add(cycle)
    session.flush()
    cycles.plan_cycle(session, cycle.id)
    session.commit()
    before = datetime.now(UTC)

    response = patch(
        client, PHONE, {"status": "opted_out"}, token=SECOND_API_TOKEN, environ_base={"REMOTE_ADDR": "10.1.2.3"}
    )

    assert response.status_code == 200
    body = response.get_json()
    assert body["status"] == "opted_out"
    assert body["consent_by"] == f"operator: API token sha256:{fingerprint(SECOND_API_TOKEN)} from 10.1.2.3"
    assert SECOND_API_TOKEN not in body["consent_by"]
    row = stored()
    assert before <= row.consent_at <= datetime.now(UTC) and row.opted_out_at == row.consent_at
    item = session.scalars(select(CycleItem)).one()
    session.refresh(item)
    assert item.state is ItemState.CANCELLED


def test_operator_opt_in_makes_an_opted_out_contact_new(client, session) -> None:
    session.add(Contact(phone=PHONE, status=ContactStatus.OPTED_OUT, opted_out_at=datetime.now(UTC)))
    session.commit()
    body = patch(client, PHONE, {"status": "new"}).get_json()
    assert (body["status"], body["opted_out_at"]) == ("new", None)
    assert body["consent_by"].startswith("operator: API token sha256:")


def apply_sms(phone: str, word: str, received_at: datetime, n: int) -> None:
    """A customer's SMS as the drain applies it, received at `received_at`."""
    _, payload = encode("sms", wire.incoming_sms(phone, "21512", word, f"in-edit-{n}"), now=received_at)
    with db._session_factory()() as session, session.begin():
        ingest.apply_batch(session, [InboxItem.from_json(payload)])


def test_a_customers_start_sent_before_the_operators_opt_out_does_not_undo_it(client, contact) -> None:
    patch(client, PHONE, {"status": "opted_out"})
    apply_sms(PHONE, "START", datetime.now(UTC) - timedelta(minutes=1), 1)  # texted before, applied after
    assert stored().status is ContactStatus.OPTED_OUT
    apply_sms(PHONE, "START", datetime.now(UTC) + timedelta(seconds=1), 2)  # texted after: the customer wins
    row = stored()
    assert row.status is ContactStatus.NEW and row.consent_by == "customer: SMS START"


def test_a_customers_stop_sent_before_the_operators_opt_in_does_not_undo_it(client, session) -> None:
    session.add(Contact(phone=PHONE, status=ContactStatus.ACTIVE))
    session.commit()
    apply_sms(PHONE, "STOP", datetime.now(UTC) - timedelta(minutes=10), 1)
    assert stored().status is ContactStatus.OPTED_OUT
    patch(client, PHONE, {"status": "new"})
    apply_sms(PHONE, "STOP", datetime.now(UTC) - timedelta(minutes=1), 2)  # older than the opt-in
    assert stored().status is ContactStatus.NEW


# -- tags: listed and filtered, on both databases --------------------------------------------------------


def test_list_contacts_filters_by_any_of_the_tags(client, session) -> None:
    session.execute(
        insert(Contact),
        [
            {"phone": "+254711000031", "status": ContactStatus.NEW, "tags": ["vip", "nairobi"]},
            {"phone": "+254711000032", "status": ContactStatus.NEW, "tags": ["mombasa"]},
            {"phone": "+254711000033", "status": ContactStatus.NEW},
        ],
    )
    session.commit()
    headers = bearer(API_TOKEN)

    def listed(query: str) -> list[str]:
        response = client.get(f"/api/contacts?{query}", headers=headers)
        assert response.status_code == 200, response.get_data(as_text=True)
        return [c["phone"] for c in response.get_json()["contacts"]]

    assert listed("tag=VIP") == ["+254711000031"]
    assert listed("tag=mombasa&tag=vip") == ["+254711000031", "+254711000032"]
    assert listed("tag=none") == []
    assert len(listed("")) == 3
    assert client.get("/api/contacts?tag=", headers=headers).status_code == 400


def test_carrying_any_tag_is_one_expression_on_both_databases(dialect_engine) -> None:
    from shared.tags import has_any_tag

    with Session(dialect_engine) as session:
        session.execute(
            insert(Contact),
            [
                {"phone": "+254711000041", "status": ContactStatus.NEW, "tags": ["vip", "nairobi"]},
                {"phone": "+254711000042", "status": ContactStatus.NEW, "tags": ["mombasa"]},
                {"phone": "+254711000043", "status": ContactStatus.NEW, "tags": []},
                {"phone": "+254711000044", "status": ContactStatus.NEW},
            ],
        )
        session.commit()

        def carrying(*tags: str) -> set[str]:
            return set(session.scalars(select(Contact.phone).where(has_any_tag(session, tags))))

        assert carrying("vip") == {"+254711000041"}
        assert carrying("mombasa", "nairobi") == {"+254711000041", "+254711000042"}
        assert carrying("kisumu") == set()
        assert session.scalar(select(Contact.tags).where(Contact.phone == "+254711000043")) in (None, [])
