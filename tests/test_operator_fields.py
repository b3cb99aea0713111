"""Every boolean, number and text the operator API takes is checked for its JSON type (issue 12).

`"dry_run": "true"` once started a real cycle to every contact (the code tested `is True`). The same
audit over every field: a boolean must be a JSON boolean, text a JSON string, a number in a query a
whole number in range; anything else is a 400 naming the field and what was sent, and nothing is started,
sent or written. A field the endpoint does not know is refused too where a typo would start real sends
(`"dryrun": true` was a real cycle).
"""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import func, select

from shared.models import Call, Contact, Cycle, Message, Schedule
from tests.conftest import API_TOKEN
from web.operator_api import PAGE_MAX

AUTH = {"Authorization": f"Bearer {API_TOKEN}"}

#: (endpoint, a valid body): each body below is one of these with one field changed.
CYCLE = ("/api/cycles", {"message": "hi", "dry_run": True})
SCHEDULE = ("/api/schedules", {"name": "weekly", "cron": "0 9 * * 1", "message": "hi"})
SEND = ("/communicate", {"to": "+254711000001", "message": "hi"})

#: A value of each JSON type, and how an error names it.
NOT_TEXT = [(True, "a boolean"), (False, "a boolean"), (0, "a number"), (1, "a number"), (1.5, "a number"),
            (-0.0, "a number"), ([], "an array"), (["hi"], "an array"), ({}, "an object")]  # fmt: skip
NOT_BOOLEAN = [("true", "a string"), ("false", "a string"), ("", "a string"), (1, "a number"), (0, "a number"),
               (1.0, "a number"), ([], "an array"), ({}, "an object")]  # fmt: skip

TEXT_FIELDS = [
    (CYCLE, "message"),
    (SCHEDULE, "name"),
    (SCHEDULE, "cron"),
    (SCHEDULE, "message"),
    (SCHEDULE, "timezone"),
    (SEND, "to"),
    (SEND, "message"),
]


def nothing_happened(session: Any) -> bool:
    tables = (Contact, Cycle, Schedule, Message, Call)
    return all(session.scalar(select(func.count()).select_from(table)) == 0 for table in tables)


def post(client: Any, endpoint: tuple[str, dict[str, Any]], **changes: Any) -> Any:
    path, valid = endpoint
    return client.post(path, json={**valid, **changes}, headers=AUTH)


@pytest.mark.parametrize(("endpoint", "field"), TEXT_FIELDS, ids=[f"{e[0]} {f}" for e, f in TEXT_FIELDS])
def test_text_fields_take_only_json_strings(client: Any, session: Any, endpoint: tuple, field: str) -> None:
    """`/communicate` sent `"message": true` as the SMS "1" (and 1e999 as "inf"): AT's callback fields are
    read leniently, and the operator's send went through the same parser."""
    for value, sent in NOT_TEXT:
        response = post(client, endpoint, **{field: value})
        assert (response.status_code, response.get_json()) == (
            400,
            {"error": f"field {field} must be text, not {sent}"},
        ), value
    assert nothing_happened(session)


def test_dry_run_takes_only_a_json_boolean(client: Any, session: Any) -> None:
    for value, sent in NOT_BOOLEAN:
        response = post(client, CYCLE, dry_run=value)
        error = f"field dry_run must be a JSON boolean (true or false), not {sent}"
        assert (response.status_code, response.get_json()) == (400, {"error": error}), value
    assert nothing_happened(session)


@pytest.mark.parametrize(
    ("endpoint", "typo"),
    [
        (CYCLE, "dryrun"),
        (CYCLE, "dry-run"),
        (CYCLE, "dryRun"),
        (CYCLE, "tag"),
        (SCHEDULE, "tag"),
        (SCHEDULE, "voiceMessage"),
    ],
)
def test_an_unknown_field_where_a_typo_would_send_for_real_is_a_400(
    client: Any, session: Any, endpoint: tuple, typo: str
) -> None:
    """`{"message": "hi", "dryrun": true}` started a real cycle to every contact; `tag` for `tags` (design
    §4.1) would message everyone, not the tagged few."""
    path, valid = endpoint
    body = {key: value for key, value in valid.items() if key != "dry_run"} | {typo: True}
    response = client.post(path, json=body, headers=AUTH)
    assert response.status_code == 400
    assert response.get_json()["error"].startswith(f"unknown field {typo!r}; the fields are: ")
    assert nothing_happened(session)


BAD_LIMITS = ["1e3", "-1", "0", "99999999999999999999", str(PAGE_MAX + 1), "true", "1.0", "0x10", "+5", " 5",
              "\u0665", "NaN", "Infinity", ""]  # fmt: skip


@pytest.mark.parametrize("path", ["/api/contacts", "/api/cycles"])
def test_limit_is_a_whole_number_in_range_naming_what_was_sent(client: Any, session: Any, path: str) -> None:
    for limit in BAD_LIMITS:
        response = client.get(path, query_string={"limit": limit}, headers=AUTH)
        error = f"limit must be a whole number from 1 to {PAGE_MAX}, not {limit!r}"
        assert (response.status_code, response.get_json()) == (400, {"error": error})
    for limit in ["1", "7", str(PAGE_MAX)]:
        assert client.get(path, query_string={"limit": limit}, headers=AUTH).status_code == 200
