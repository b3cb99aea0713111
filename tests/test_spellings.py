"""The seed's own spellings (issue 11 item 8): AT's status words match the policy table whatever their case, and
are stored in the table's spelling; a delivery report with only `id` and `status` (what courier's AT handler
tests post) is accepted and applied by its id.

Callbacks go through the receiver (its fast path for forms) onto the real Redis inbox and are drained into
Postgres by the worker's own function.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from sqlalchemy import select

from shared import status_policy
from shared.models import Call, Contact, ContactStatus, DlrEvent, Message
from shared.status_policy import Action, Kind, decide
from simulator import wire
from tests.conftest import FIXTURES, WEBHOOK_TOKEN

CUSTOMER = "+254711000001"
AT_NUMBER = "+254711082369"


def contact_with_message(session: Any) -> tuple[Contact, Message]:
    contact = Contact(phone=CUSTOMER, status=ContactStatus.PENDING)
    session.add(contact)
    session.flush()
    message = Message(contact_id=contact.id, phone=CUSTOMER, text="hello", at_message_id=wire.new_message_id())
    session.add(message)
    session.flush()
    contact.last_message_id = message.id
    session.commit()
    return contact, message


def reload(session: Any, obj: Any) -> Any:
    session.expire_all()
    return session.get(type(obj), obj.id)


def test_seed_curl_failed_in_capitals_fails_the_message(client: Any, session: Any, drain: Any) -> None:
    contact, message = contact_with_message(session)
    seed = json.loads((FIXTURES / "seed" / "dlr.json").read_text())  # "status": "FAILED", as the seed README posts
    body = {**seed, "id": message.at_message_id, "phoneNumber": CUSTOMER}
    response = client.post(f"/dlr?token={WEBHOOK_TOKEN}", json=body)
    assert response.status_code == 200, response.get_data(as_text=True)
    drain()
    stored = reload(session, message)
    assert (stored.status, stored.failure_reason) == ("Failed", "UserIsInactive")  # the table's spelling
    assert reload(session, contact).status is ContactStatus.INACTIVE
    assert session.scalars(select(DlrEvent.status)).all() == ["Failed"]


def test_a_report_with_only_id_and_status_is_applied_by_its_id(app: Any, session: Any, drain: Any) -> None:
    contact, message = contact_with_message(session)
    reached_flask: list[str] = []
    app.before_request(lambda: reached_flask.append("dlr"))
    form = {"id": message.at_message_id, "status": "Success"}
    response = app.test_client().post(f"/dlr?token={WEBHOOK_TOKEN}", data=form)
    assert response.status_code == 200, response.get_data(as_text=True)
    assert reached_flask == [], "the receiver's fast path (web/fastpath.py) took it, as it takes any good form"
    assert app.test_client().post(f"/dlr?token={WEBHOOK_TOKEN}", json=form).status_code == 200  # and Flask alike
    drain()
    assert reload(session, message).status == "Success"
    assert reload(session, contact).status is ContactStatus.ACTIVE
    assert session.scalars(select(DlrEvent.phone)).all() == [None]


def test_an_unknown_id_without_a_phone_is_kept_and_harmless(client: Any, session: Any, drain: Any) -> None:
    contact, message = contact_with_message(session)
    response = client.post(f"/dlr?token={WEBHOOK_TOKEN}", json={"id": "ATXid_nobody", "status": "success"})
    assert response.status_code == 200
    drain()
    event = session.scalars(select(DlrEvent)).one()
    assert (event.at_message_id, event.status, event.phone, event.applied_at) == ("ATXid_nobody", "Success", None, None)
    assert reload(session, message).status is None
    assert reload(session, contact).status is ContactStatus.PENDING


def test_a_hangup_cause_in_lower_case_is_the_tables(client: Any, session: Any, drain: Any) -> None:
    contact = Contact(phone=CUSTOMER, status=ContactStatus.INACTIVE)
    session.add(contact)
    session.commit()
    session_id = wire.new_session_id()
    body = wire.voice_final_not_answered(session_id, CUSTOMER, AT_NUMBER, "unallocated_number")
    response = client.post(f"/voice?token={WEBHOOK_TOKEN}", data=body)
    assert response.status_code == 200
    drain()
    call = session.scalars(select(Call).where(Call.session_id == session_id)).one()
    assert (call.hangup_cause, call.outcome) == ("UNALLOCATED_NUMBER", Action.INVALID.value)
    assert reload(session, contact).status is ContactStatus.INVALID


@pytest.mark.parametrize(
    ("kind", "given", "expected"),
    [
        (Kind.DLR, "FAILED", "Failed"),
        (Kind.DLR, " success ", "Success"),
        (Kind.DLR, "absentsubscriber", "AbsentSubscriber"),
        (Kind.FAILURE, "USERINBLACKLIST", "UserInBlackList"),
        (Kind.FAILURE, "notnetworksubcriber", "NotNetworkSubcriber"),  # AT's own misspelling stays a key
        (Kind.HANGUP, "normal_clearing", "NORMAL_CLEARING"),
        (Kind.DLR, "Teleported", "Teleported"),  # unknown: kept as received
        (Kind.DLR, None, None),
    ],
)
def test_canonical_spelling(kind: Kind, given: str | None, expected: str | None) -> None:
    assert status_policy.canonical(kind, given) == expected
    if expected is not None:
        assert decide(kind, given) is decide(kind, expected)
