"""The operator API (design §4) end to end: the Flask test client, a real Postgres database, bearer tokens.

No worker runs here. What a 202 from `/communicate` promises is a `queued` row and one send task handed to
Celery; the task is captured instead of published, so no later test's worker can pick up a stale send.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from sqlalchemy import func, select

from shared.models import Call, Channel, Contact, ContactStatus, Cycle, Message
from tests.conftest import API_TOKEN, FIXTURES, SECOND_API_TOKEN, WEBHOOK_TOKEN
from web.operator_api import MAX_UPLOAD_BYTES, PAGE_MAX

SEED_SEND = json.loads((FIXTURES / "seed" / "communicate_send.json").read_text())
SEED_PHONE = "+254722000000"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def error_of(response: Any) -> str:
    """The JSON error message; every error must be JSON, never an HTML page."""
    assert response.is_json, response.get_data(as_text=True)
    return response.get_json()["error"]


def add_contact(session: Any, phone: str, status: ContactStatus = ContactStatus.NEW, **fields: Any) -> Contact:
    contact = Contact(phone=phone, status=status, **fields)
    session.add(contact)
    session.commit()
    return contact


def phones_in_db(session: Any) -> dict[str, str | None]:
    session.expire_all()
    return {c.phone: c.name for c in session.scalars(select(Contact))}


@pytest.fixture
def sent_tasks(app: Any, monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, list[Any], str | None]]:
    """Capture the tasks the receiver hands to Celery (name, args, the queue it routes to) unpublished."""
    calls: list[tuple[str, list[Any], str | None]] = []
    celery = app.extensions["reach"].celery

    def record(name: str, args: list[Any] | None = None, queue: str | None = None, **_: Any) -> None:
        calls.append((name, list(args or []), queue or celery.amqp.router.route({}, name)["queue"].name))

    monkeypatch.setattr(celery, "send_task", record)
    return calls


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


# -- import -----------------------------------------------------------------------------------------------

ODD_FORMATS = [
    {"phone": "0711000001", "name": "Amina"},
    {"phone": "254711000002"},
    {"phone": "+254 711 000 003", "name": "  Baraka  "},
    {"phone": "00254711000004", "name": ""},
    {"phone": 254711000005, "name": "Wanjirũ"},
]
ODD_FORMATS_STORED = {
    "+254711000001": "Amina",
    "+254711000002": None,
    "+254711000003": "Baraka",
    "+254711000004": None,
    "+254711000005": "Wanjirũ",
}


@pytest.mark.parametrize("wrap", [False, True], ids=["list", "contacts-object"])
def test_json_import_normalises_numbers(client, session, operator_headers, wrap: bool) -> None:
    body: Any = {"contacts": ODD_FORMATS} if wrap else ODD_FORMATS
    response = client.post("/api/contacts", json=body, headers=operator_headers)
    assert response.status_code == 200
    report = response.get_json()
    assert report == {"received": 5, "created": 5, "updated": 0, "refused_count": 0, "refused": []}
    assert phones_in_db(session) == ODD_FORMATS_STORED
    assert {c.status for c in session.scalars(select(Contact))} == {ContactStatus.NEW}


CSV_BODIES = {
    "plain": "phone,name\r\n0711000001,Amina\r\n254711000002,\r\n+254 711 000 003,  Baraka  \r\n"
    "00254711000004,\r\n254711000005,Wanjirũ\r\n",
    "bom-and-header-case": "\ufeffPhone , NAME\n0711000001,Amina\n254711000002,\n+254 711 000 003,Baraka\n"
    "00254711000004,\n254711000005,Wanjirũ\n",
    "columns-swapped-extra-column": "Name,Notes,PHONE\nAmina,vip,0711000001\n,,254711000002\nBaraka,,+254 711 000 003\n"
    ",x,00254711000004\nWanjirũ,,254711000005\n",
    "old-mac-line-ends": "phone,name\r0711000001,Amina\r254711000002,\r+254 711 000 003,Baraka\r"
    "00254711000004,\r254711000005,Wanjirũ\r",
}


@pytest.mark.parametrize("content_type", ["text/csv", "text/csv; charset=utf-8", "application/csv"])
@pytest.mark.parametrize("body", CSV_BODIES.values(), ids=CSV_BODIES.keys())
def test_csv_import_normalises_numbers(client, session, operator_headers, body: str, content_type: str) -> None:
    response = client.post(
        "/api/contacts", data=body.encode("utf-8"), content_type=content_type, headers=operator_headers
    )
    assert response.status_code == 200, response.get_data(as_text=True)
    report = response.get_json()
    assert (report["received"], report["created"], report["updated"], report["refused"]) == (5, 5, 0, [])
    assert phones_in_db(session) == ODD_FORMATS_STORED


# (row, phone as reported, a word the reason must contain)
REFUSED_JSON = [
    ({"phone": "0711000001", "name": "kept"}, None),
    ({"phone": ""}, (2, "", "empty")),
    ({"phone": "hello"}, (3, "hello", "not a phone number")),
    ({"phone": "0711"}, (4, "0711", "digits")),
    ({"phone": "+254 711 000 001", "name": "twice"}, (5, "+254711000001", "duplicate of row 1")),
    ("0711000002", (6, "0711000002", "object")),
    ({"phone": "0800223456"}, (7, "0800223456", "toll-free")),
    ({"phone": "0900223456"}, (8, "0900223456", "premium")),
    ({"name": "no number"}, (9, None, "missing phone")),
    ({"phone": "0711000003", "name": 42}, (10, "0711000003", "name must be text")),
    ({"phone": ["0711000004"]}, (11, ["0711000004"], "missing phone")),
    ({"phone": "0711000005"}, None),
]


def test_refused_rows_come_back_with_row_number_and_reason(client, session, operator_headers) -> None:
    response = client.post("/api/contacts", json=[row for row, _ in REFUSED_JSON], headers=operator_headers)
    assert response.status_code == 200
    report = response.get_json()
    expected = [want for _, want in REFUSED_JSON if want]
    assert (report["received"], report["created"], report["updated"]) == (len(REFUSED_JSON), 2, 0)
    assert report["refused_count"] == len(expected)
    assert [(r["row"], r["phone"]) for r in report["refused"]] == [(row, phone) for row, phone, _ in expected]
    for refused, (_, _, reason) in zip(report["refused"], expected, strict=True):
        assert reason in refused["reason"], refused
    # Only the good rows were written, and the first of the duplicates wins.
    assert phones_in_db(session) == {"+254711000001": "kept", "+254711000005": None}


def test_refused_csv_rows_are_numbered_from_the_first_data_row(client, session, operator_headers) -> None:
    body = "phone,name\n0711000001,A\n,empty\nabcdefgh,letters\n0711000001,again\n0711000002,B\n"
    response = client.post("/api/contacts", data=body, content_type="text/csv", headers=operator_headers)
    report = response.get_json()
    assert report["received"] == 5
    assert report["created"] == 2
    assert [(r["row"], r["phone"]) for r in report["refused"]] == [(2, ""), (3, "abcdefgh"), (4, "+254711000001")]
    assert "duplicate of row 1" in report["refused"][2]["reason"]
    assert set(phones_in_db(session)) == {"+254711000001", "+254711000002"}


def test_reimport_updates_names_but_never_resets_status(client, session, operator_headers) -> None:
    opted_out = add_contact(session, "+254711000001", ContactStatus.OPTED_OUT, name="Old name")
    active = add_contact(
        session, "+254711000002", ContactStatus.ACTIVE, name="Keeps her name", last_sms_status="Success"
    )
    opted_out_at = session.get(Contact, opted_out.id).opted_out_at
    rows = [{"phone": "0711000001", "name": "New name"}, {"phone": "254711000002"}, {"phone": "0711000003"}]
    response = client.post("/api/contacts", json=rows, headers=operator_headers)
    report = response.get_json()
    assert (report["received"], report["created"], report["updated"], report["refused"]) == (3, 1, 2, [])
    session.expire_all()
    first, second = session.get(Contact, opted_out.id), session.get(Contact, active.id)
    assert (first.name, first.status, first.opted_out_at) == ("New name", ContactStatus.OPTED_OUT, opted_out_at)
    # A row without a name does not erase the known one; the SMS outcome stays too.
    assert (second.name, second.status, second.last_sms_status) == ("Keeps her name", ContactStatus.ACTIVE, "Success")
    shown = client.get("/api/contacts/0711000001", headers=operator_headers).get_json()
    assert (shown["name"], shown["status"]) == ("New name", "opted_out")


@pytest.mark.parametrize(
    ("data", "content_type", "says"),
    [
        ("this is neither JSON nor CSV", "text/plain", "not valid JSON"),
        ("<contacts><phone>0711000001</phone></contacts>", "application/xml", "not valid JSON"),
        ("{not json", "application/json", "not valid JSON"),
        ("", "application/json", "not valid JSON"),
        ('{"people": [{"phone": "0711000001"}]}', "application/json", "expected a JSON list"),
        ('"0711000001"', "application/json", "expected a JSON list"),
        ('{"contacts": "0711000001"}', "application/json", "expected a JSON list"),
    ],
    ids=["text", "xml", "broken-json", "empty", "wrong-key", "scalar", "contacts-not-a-list"],
)
def test_unreadable_upload_is_400(client, session, operator_headers, data: str, content_type: str, says: str) -> None:
    response = client.post("/api/contacts", data=data, content_type=content_type, headers=operator_headers)
    assert response.status_code == 400
    assert says in error_of(response)
    assert phones_in_db(session) == {}


@pytest.mark.parametrize(
    "data",
    ["name,number\nAmina,0711000001\n", "0711000001,Amina\n0711000002,Baraka\n", ""],
    ids=["no-phone-column", "no-header", "empty"],
)
def test_csv_without_a_phone_column_is_400(client, session, operator_headers, data: str) -> None:
    response = client.post("/api/contacts", data=data, content_type="text/csv", headers=operator_headers)
    assert response.status_code == 400
    assert "'phone' column" in error_of(response)
    assert phones_in_db(session) == {}


def test_large_csv_import_is_allowed_beyond_the_callback_limit(
    client, session, operator_headers, settings, redis_client
) -> None:
    lines = ["phone,name", *(f"07110{i:05d},Customer number {i}" for i in range(5000))]
    body = ("\n".join(lines) + "\n").encode()
    assert settings.max_body_bytes < len(body) < MAX_UPLOAD_BYTES

    response = client.post("/api/contacts", data=body, content_type="text/csv", headers=operator_headers)
    assert response.status_code == 200, response.get_data(as_text=True)
    report = response.get_json()
    assert (report["received"], report["created"], report["updated"], report["refused"]) == (5000, 5000, 0, [])
    assert session.scalar(select(func.count()).select_from(Contact)) == 5000
    assert session.scalar(select(Contact.name).where(Contact.phone == "+254711004999")) == "Customer number 4999"

    again = client.post("/api/contacts", data=body, content_type="text/csv", headers=operator_headers).get_json()
    assert (again["created"], again["updated"]) == (0, 5000)
    assert session.scalar(select(func.count()).select_from(Contact)) == 5000

    # The same number of bytes sent as an AT callback is still refused: only operator uploads may be big.
    callback = client.post(f"/dlr?token={WEBHOOK_TOKEN}", data=body, content_type="application/x-www-form-urlencoded")
    assert callback.status_code == 413
    assert [k for k in redis_client.keys("reach:*") if not k.startswith(b"reach:limits:")] == []  # nothing queued


def test_csv_the_csv_module_cannot_read_is_a_400_naming_the_line(client, session, operator_headers) -> None:
    body = 'phone,name\n0711000001,"Amina\n0711000002,never closed'  # an opened quote runs off the end
    response = client.post("/api/contacts", data=body, content_type="text/csv", headers=operator_headers)
    assert response.status_code == 400
    assert "not readable as CSV (line 3)" in error_of(response)
    assert phones_in_db(session) == {}


def test_upload_over_the_operator_limit_is_413(client, session, operator_headers) -> None:
    body = b"phone,name\n" + b"0" * MAX_UPLOAD_BYTES
    response = client.post("/api/contacts", data=body, content_type="text/csv", headers=operator_headers)
    assert response.status_code == 413
    assert "too large" in error_of(response)
    assert phones_in_db(session) == {}


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


# -- one-off send through /communicate --------------------------------------------------------------------


def test_seed_send_to_a_new_number_is_an_sms(client, session, operator_headers, sent_tasks) -> None:
    response = client.post("/communicate", json=SEED_SEND, headers=operator_headers)
    assert response.status_code == 202
    answer = response.get_json()
    assert answer["channel"] == "sms"
    message = session.get(Message, answer["id"])
    assert (message.phone, message.text, message.send_state) == (SEED_PHONE, SEED_SEND["message"], "queued")
    contact = session.scalars(select(Contact).where(Contact.phone == SEED_PHONE)).one()
    assert (message.contact_id, contact.status) == (contact.id, ContactStatus.NEW)
    assert sent_tasks == [("reach.send.sms", [answer["id"]], "send")]
    assert session.scalar(select(func.count()).select_from(Call)) == 0


def test_send_as_a_form_with_a_local_number(client, session, operator_headers, sent_tasks) -> None:
    response = client.post("/communicate", data={"to": "0722000000", "message": "hi"}, headers=operator_headers)
    assert response.status_code == 202
    assert session.get(Message, response.get_json()["id"]).phone == SEED_PHONE


@pytest.mark.parametrize(
    ("status", "preference", "channel"),
    [
        (ContactStatus.NEW, None, Channel.SMS),
        (ContactStatus.ACTIVE, None, Channel.SMS),
        (ContactStatus.INACTIVE, None, Channel.VOICE),
        (ContactStatus.PENDING, None, Channel.VOICE),
        (ContactStatus.ACTIVE, Channel.VOICE, Channel.VOICE),
        (ContactStatus.INACTIVE, Channel.SMS, Channel.SMS),
    ],
    ids=["new", "active", "inactive", "pending", "active-prefers-voice", "inactive-prefers-sms"],
)
def test_send_uses_the_channel_a_cycle_would(
    client, session, operator_headers, sent_tasks, status, preference, channel
) -> None:
    contact = add_contact(session, SEED_PHONE, status, channel_preference=preference)
    response = client.post("/communicate", json=SEED_SEND, headers=operator_headers)
    assert response.status_code == 202
    answer = response.get_json()
    assert answer["channel"] == channel.value
    session.expire_all()
    if channel is Channel.SMS:
        row: Message | Call = session.get(Message, answer["id"])
        assert row.text == SEED_SEND["message"]
        assert session.scalar(select(func.count()).select_from(Call)) == 0
    else:
        row = session.get(Call, answer["id"])
        assert row.message == SEED_SEND["message"]
        assert session.scalar(select(func.count()).select_from(Message)) == 0
    assert (row.contact_id, row.phone, row.send_state) == (contact.id, SEED_PHONE, "queued")
    assert sent_tasks == [(f"reach.send.{'sms' if channel is Channel.SMS else 'call'}", [answer["id"]], "send")]
    # Sending does not change who the contact is.
    assert session.get(Contact, contact.id).status == status


@pytest.mark.parametrize("status", [ContactStatus.OPTED_OUT, ContactStatus.INVALID])
def test_send_to_an_unreachable_contact_is_409_and_queues_nothing(
    client, session, operator_headers, sent_tasks, status
) -> None:
    add_contact(session, SEED_PHONE, status)
    response = client.post("/communicate", json=SEED_SEND, headers=operator_headers)
    assert response.status_code == 409
    assert status.value in error_of(response)
    assert session.scalar(select(func.count()).select_from(Message)) == 0
    assert session.scalar(select(func.count()).select_from(Call)) == 0
    assert sent_tasks == []


@pytest.mark.parametrize(
    ("body", "says"),
    [
        ({"to": SEED_PHONE}, "message"),
        ({"to": SEED_PHONE, "message": "   "}, "message"),
        ({"message": "hi"}, "to"),
        ({"to": "hello", "message": "hi"}, "bad phone number"),
        ({"to": SEED_PHONE, "message": "x" * 1601}, "message"),
    ],
    ids=["no-message", "blank-message", "no-to", "bad-to", "message-too-long"],
)
def test_bad_send_is_400_naming_the_field(client, session, operator_headers, sent_tasks, body, says) -> None:
    response = client.post("/communicate", json=body, headers=operator_headers)
    assert response.status_code == 400
    assert says in error_of(response)
    assert session.scalar(select(func.count()).select_from(Message)) == 0
    assert sent_tasks == []


@pytest.mark.parametrize("headers", [{}, bearer("nope"), {"Authorization": f"Basic {API_TOKEN}"}])
def test_send_without_bearer_is_401(client, session, sent_tasks, headers) -> None:
    response = client.post("/communicate", json=SEED_SEND, headers=headers)
    assert response.status_code == 401
    assert session.scalar(select(func.count()).select_from(Contact)) == 0
    assert sent_tasks == []


def test_send_needs_the_bearer_not_the_webhook_token(client, session, sent_tasks) -> None:
    response = client.post(f"/communicate?token={WEBHOOK_TOKEN}", json=SEED_SEND)
    assert response.status_code == 401
    assert sent_tasks == []


def test_send_with_the_broker_down_is_kept_and_picked_up_later(make_app, session, operator_headers) -> None:
    """The row is committed before the task is published: a dead broker means later, never lost or doubled."""
    from datetime import UTC, datetime, timedelta

    from tests.conftest import free_port
    from worker import sending

    client = make_app(redis_url=f"redis://127.0.0.1:{free_port()}/0").test_client()
    response = client.post("/communicate", json=SEED_SEND, headers=operator_headers)
    assert response.status_code == 202
    answer = response.get_json()
    assert "broker is unreachable" in answer["warning"]
    message = session.get(Message, answer["id"])
    assert message.send_state == "queued"
    assert sending.orphaned(session) == []  # too fresh: its task may simply be on its way
    message.created_at = datetime.now(UTC) - timedelta(minutes=11)
    session.commit()
    assert sending.orphaned(session) == [("reach.send.sms", answer["id"])]


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
