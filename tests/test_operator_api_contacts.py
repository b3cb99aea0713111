"""The operator API's contacts: one contact by any spelling of its number, with its history, and the
cursor-paginated listing by status. The Flask test client and a real Postgres database."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from shared.models import Call, Contact, ContactStatus, Message
from tests.operator_api_support import SEED_PHONE, add_contact, error_of
from web.operator_api import PAGE_MAX

# -- one contact ------------------------------------------------------------------------------------------


@pytest.fixture
def known_contact(session) -> Contact:
    contact = add_contact(
        session,
        SEED_PHONE,
        ContactStatus.INACTIVE,
        name="Jomo",
        last_sms_status="Failed",
        last_failure_reason="UserIsInactive",
        last_call_status="NotAnswered",
        last_hangup_cause="NO_ANSWER",
    )
    session.add_all(
        [
            Message(contact_id=contact.id, phone=SEED_PHONE, text="first", send_state="sent", status="Failed"),
            Message(contact_id=contact.id, phone=SEED_PHONE, text="second", send_state="queued"),
            Call(contact_id=contact.id, phone=SEED_PHONE, message="hello", send_state="sent", hangup_cause="NO_ANSWER"),
        ]
    )
    session.commit()
    return contact


@pytest.mark.parametrize(
    "path_phone",
    ["+254722000000", "254722000000", "%2B254722000000", "0722000000", "+254%20722%20000%20000"],
)
def test_contact_found_by_any_spelling_of_its_number(client, known_contact, operator_headers, path_phone) -> None:
    response = client.get(f"/api/contacts/{path_phone}", headers=operator_headers)
    assert response.status_code == 200
    shown = response.get_json()
    assert shown["id"] == known_contact.id
    assert {k: shown[k] for k in ("phone", "name", "status")} == {
        "phone": SEED_PHONE,
        "name": "Jomo",
        "status": "inactive",
    }
    assert (shown["last_sms_status"], shown["last_failure_reason"]) == ("Failed", "UserIsInactive")
    assert (shown["last_call_status"], shown["last_hangup_cause"]) == ("NotAnswered", "NO_ANSWER")


def test_contact_shows_its_message_and_call_history_newest_first(client, known_contact, operator_headers) -> None:
    shown = client.get(f"/api/contacts/{SEED_PHONE}", headers=operator_headers).get_json()
    assert [(m["send_state"], m["status"]) for m in shown["messages"]] == [("queued", None), ("sent", "Failed")]
    assert shown["messages"][0]["id"] > shown["messages"][1]["id"]
    assert [(c["send_state"], c["hangup_cause"]) for c in shown["calls"]] == [("sent", "NO_ANSWER")]


def test_contact_without_history_has_empty_lists(client, session, operator_headers) -> None:
    add_contact(session, "+254711000001")
    shown = client.get("/api/contacts/0711000001", headers=operator_headers).get_json()
    assert (shown["status"], shown["messages"], shown["calls"]) == ("new", [], [])


def test_history_belongs_to_the_contact_only(client, known_contact, session, operator_headers) -> None:
    other = add_contact(session, "+254711000001")
    session.add(Message(contact_id=other.id, phone=other.phone, text="not Jomo's"))
    session.commit()
    shown = client.get(f"/api/contacts/{SEED_PHONE}", headers=operator_headers).get_json()
    assert len(shown["messages"]) == 2


def test_unknown_contact_is_json_404(client, known_contact, operator_headers) -> None:
    response = client.get("/api/contacts/0733000000", headers=operator_headers)
    assert response.status_code == 404
    assert "+254733000000" in error_of(response)


@pytest.mark.parametrize(
    ("path_phone", "why"),
    [("hello", "not a phone number"), ("0711", "wrong number of digits"), ("0800223456", "toll-free")],
)
def test_garbage_phone_is_json_400_saying_why(client, known_contact, operator_headers, path_phone, why) -> None:
    response = client.get(f"/api/contacts/{path_phone}", headers=operator_headers)
    assert response.status_code == 400
    message = error_of(response)
    assert path_phone in message
    assert why in message


# -- listing ----------------------------------------------------------------------------------------------

# 25 contacts: 12 active, 7 inactive, 3 new, 2 opted_out, 1 pending, none invalid; interleaved by id.
STATUS_MIX = (
    [ContactStatus.ACTIVE, ContactStatus.INACTIVE, ContactStatus.ACTIVE, ContactStatus.NEW, ContactStatus.ACTIVE] * 3
    + [ContactStatus.INACTIVE, ContactStatus.ACTIVE, ContactStatus.OPTED_OUT, ContactStatus.INACTIVE] * 2
    + [ContactStatus.PENDING, ContactStatus.INACTIVE]
)


@pytest.fixture
def many_contacts(session) -> dict[ContactStatus, list[str]]:
    assert len(STATUS_MIX) == 25
    contacts = [Contact(phone=f"+2547110000{i:02d}", status=status) for i, status in enumerate(STATUS_MIX)]
    session.add_all(contacts)
    session.commit()
    by_status: dict[ContactStatus, list[str]] = {s: [] for s in ContactStatus}
    for contact in sorted(contacts, key=lambda c: c.id):
        by_status[contact.status].append(contact.phone)
    return by_status


def walk(client: Any, headers: dict[str, str], query: str) -> list[list[dict[str, Any]]]:
    """Every page of a listing, following next_cursor until it is None."""
    pages: list[list[dict[str, Any]]] = []
    cursor = None
    while True:
        url = f"/api/contacts?{query}" + (f"&cursor={cursor}" if cursor else "")
        response = client.get(url, headers=headers)
        assert response.status_code == 200, response.get_data(as_text=True)
        doc = response.get_json()
        pages.append(doc["contacts"])
        cursor = doc["next_cursor"]
        if cursor is None:
            return pages
        assert len(pages) < 100, "pagination does not end"


@pytest.mark.parametrize("status", [s.value for s in ContactStatus])
@pytest.mark.parametrize("limit", [1, 5, 10, 12, PAGE_MAX])
def test_status_listing_pages_through_every_contact_once_in_id_order(
    client, many_contacts, operator_headers, status: str, limit: int
) -> None:
    pages = walk(client, operator_headers, f"status={status}&limit={limit}")
    listed = [c for page in pages for c in page]
    assert [c["phone"] for c in listed] == many_contacts[ContactStatus(status)]
    assert all(c["status"] == status for c in listed)
    ids = [c["id"] for c in listed]
    assert ids == sorted(ids)
    assert all(len(page) == limit for page in pages[:-1])
    assert len(pages[-1]) <= limit
    # An exact multiple of the page size ends on a full page rather than an extra empty one.
    expected_pages = max(1, -(-len(listed) // limit))
    assert len(pages) == expected_pages


def test_listing_without_status_pages_through_everyone(client, many_contacts, operator_headers) -> None:
    pages = walk(client, operator_headers, "limit=10")
    assert [len(p) for p in pages] == [10, 10, 5]
    listed = [c["phone"] for page in pages for c in page]
    assert sorted(listed) == [f"+2547110000{i:02d}" for i in range(25)]
    ids = [c["id"] for page in pages for c in page]
    assert ids == sorted(ids)
    default = client.get("/api/contacts", headers=operator_headers).get_json()
    assert (len(default["contacts"]), default["next_cursor"]) == (25, None)


def test_listing_contacts_added_between_pages_are_not_skipped(client, session, operator_headers) -> None:
    for i in range(3):
        add_contact(session, f"+25471100000{i}", ContactStatus.ACTIVE)
    first = client.get("/api/contacts?status=active&limit=2", headers=operator_headers).get_json()
    add_contact(session, "+254711000009", ContactStatus.ACTIVE)
    second = client.get(f"/api/contacts?status=active&limit=2&cursor={first['next_cursor']}", headers=operator_headers)
    assert [c["phone"] for c in second.get_json()["contacts"]] == ["+254711000002", "+254711000009"]


def test_unknown_status_is_400_listing_the_allowed_values(client, many_contacts, operator_headers) -> None:
    response = client.get("/api/contacts?status=happy", headers=operator_headers)
    assert response.status_code == 400
    message = error_of(response)
    assert "happy" in message
    for status in ContactStatus:
        assert status.value in message


def cursor_of(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


@pytest.mark.parametrize(
    "cursor",
    [
        "garbage",
        "!!!!",
        "%FF%FE",
        cursor_of("id:abc"),
        cursor_of("id:-1"),
        cursor_of("id:²"),
        cursor_of("user:5"),
        cursor_of("5"),
        cursor_of("id:99999999999999999999999"),
        cursor_of("id:" + "9" * 5000),
    ],
)
def test_bad_cursor_is_400(client, many_contacts, operator_headers, cursor: str) -> None:
    response = client.get(f"/api/contacts?cursor={cursor}", headers=operator_headers)
    assert response.status_code == 400
    assert "cursor" in error_of(response)


@pytest.mark.parametrize("limit", ["0", "-1", str(PAGE_MAX + 1), "5000", "abc", "1.5", "", " 10", "²", "9" * 5000])
def test_bad_limit_is_400(client, many_contacts, operator_headers, limit: str) -> None:
    response = client.get("/api/contacts", query_string={"limit": limit}, headers=operator_headers)
    assert response.status_code == 400
    assert "limit" in error_of(response)
