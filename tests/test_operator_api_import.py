"""The operator API's contacts import (`POST /api/contacts`, JSON and CSV): numbers normalised, refused rows
with their reasons, upload limits. The Flask test client and a real Postgres database."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import func, select

from shared.models import Contact, ContactStatus
from tests.conftest import WEBHOOK_TOKEN
from tests.operator_api_support import add_contact, error_of, phones_in_db
from web.operator_api import MAX_UPLOAD_BYTES

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
    ({"phone": ["0711000004"]}, (11, ["0711000004"], "phone must be text or a whole number, not an array")),
    ({"phone": "0711000005"}, None),
    ({"phone": True}, (13, True, "phone must be text or a whole number, not a boolean")),
    ({"phone": 711000006.5}, (14, 711000006.5, "phone must be text or a whole number, not a decimal number")),
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
