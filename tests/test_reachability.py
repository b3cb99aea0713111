"""Reachable again (issue 14): an SMS or USSD session from the customer, or a call they acknowledged, proves
they can be reached; a transient SMS failure older than that proof (the policy table's `clears_on_reach`)
no longer routes them to a call. Events are ordered by when they were received, not by when they were applied.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from shared.cycles import channel_for
from shared.inbox import InboxItem
from shared.models import Call, Channel, Contact, ContactStatus, Message
from shared.status_policy import POLICY, Kind, clears_on_reach
from simulator import wire
from tests.conftest import WEBHOOK_TOKEN
from worker import ingest

CUSTOMER = "+254711000001"
AT_NUMBER = "+254711082369"


def post(client, path: str, body: dict[str, str]) -> None:
    response = client.post(f"{path}?token={WEBHOOK_TOKEN}", data=body)
    assert response.status_code == 200, response.get_data(as_text=True)


def failed_contact(session) -> tuple[Contact, Message]:
    """A contact waiting for the report of its last SMS."""
    contact = Contact(phone=CUSTOMER, status=ContactStatus.PENDING)
    session.add(contact)
    session.flush()
    message = Message(contact_id=contact.id, phone=CUSTOMER, text="hello", at_message_id=wire.new_message_id())
    session.add(message)
    session.flush()
    contact.last_message_id = message.id
    session.commit()
    return contact, message


def apply(session, kind: str, data: dict[str, str], at: datetime) -> None:
    """One callback received at `at`, applied by the drain's function (as a batch it drained)."""
    ingest.apply_batch(session, [InboxItem(id=uuid.uuid4().hex, kind=kind, received_at=at, data=data)])
    session.commit()


def status_of(session, contact: Contact) -> ContactStatus:
    session.expire_all()
    return session.get(Contact, contact.id).status


def acknowledged_call(session, client, contact: Contact) -> str:
    session_id = wire.new_session_id()
    session.add(
        Call(contact_id=contact.id, phone=contact.phone, message="hi", send_state="sent", session_id=session_id)
    )
    session.commit()
    post(client, "/voice", wire.voice_active(session_id, contact.phone, AT_NUMBER, dtmf_digits="1"))
    return session_id


@pytest.mark.parametrize(
    ("kind", "value", "clears"),
    [
        (Kind.DLR, "AbsentSubscriber", True),  # phone off or out of coverage: over once they answer
        (Kind.DLR, "Expired", False),  # the telco's firewall discarded it: it would again
        (Kind.DLR, "Rejected", False),
        (Kind.DLR, "Failed", False),
        (Kind.FAILURE, "UserIsInactive", False),
        (Kind.FAILURE, "DeliveryFailure", False),
        (Kind.FAILURE, "DoNotDisturbRejection", False),
    ],
)
def test_policy_table_says_which_failures_a_reachable_customer_gets_over(kind: Kind, value: str, clears: bool) -> None:
    assert POLICY[(kind, value)].clears_on_reach is clears


def test_only_failures_can_clear() -> None:
    for (kind, value), rule in POLICY.items():
        if rule.clears_on_reach:
            assert kind in {Kind.DLR, Kind.FAILURE}, value


def test_clears_on_reach_reads_the_reason_first() -> None:
    assert clears_on_reach("AbsentSubscriber", None)
    assert not clears_on_reach("Failed", "UserIsInactive")
    assert not clears_on_reach(None, None)


def test_acknowledged_call_after_phone_off_gets_sms_next_cycle(client, session, drain) -> None:
    contact, message = failed_contact(session)
    post(client, "/dlr", wire.dlr(message.at_message_id, "AbsentSubscriber", CUSTOMER))
    drain()
    assert status_of(session, contact) is ContactStatus.INACTIVE
    assert channel_for(session, contact.id) is Channel.VOICE
    acknowledged_call(session, client, contact)
    drain()
    assert status_of(session, contact) is ContactStatus.ACTIVE
    assert channel_for(session, contact.id) is Channel.SMS
    stored = session.get(Contact, contact.id)
    assert stored.reached_by == "call" and stored.reached_at is not None


def test_acknowledged_call_after_a_lasting_failure_is_still_called(client, session, drain) -> None:
    contact, message = failed_contact(session)
    post(client, "/dlr", wire.dlr(message.at_message_id, "Failed", CUSTOMER, failure_reason="UserIsInactive"))
    drain()
    acknowledged_call(session, client, contact)
    drain()
    assert status_of(session, contact) is ContactStatus.INACTIVE
    assert session.get(Contact, contact.id).reached_by == "call"  # reachable, but SMS cannot reach them


def test_a_call_answered_without_a_key_proves_nothing(client, session, drain) -> None:
    contact, message = failed_contact(session)
    post(client, "/dlr", wire.dlr(message.at_message_id, "AbsentSubscriber", CUSTOMER))
    session_id = wire.new_session_id()
    session.add(Call(contact_id=contact.id, phone=CUSTOMER, message="hi", send_state="sent", session_id=session_id))
    session.commit()
    post(client, "/voice", wire.voice_final_answered(session_id, CUSTOMER, AT_NUMBER, duration=20))
    drain()
    assert status_of(session, contact) is ContactStatus.INACTIVE
    assert session.get(Contact, contact.id).reached_at is None


@pytest.mark.parametrize(
    ("path", "body", "by"),
    [
        ("/receiveSMS", wire.incoming_sms(CUSTOMER, "21512", "hello, got a new phone", "in-1"), "sms"),
        ("/ussd", wire.ussd("ATUid_r1", CUSTOMER, ""), "ussd"),
    ],
)
def test_the_customer_reaching_us_makes_them_reachable(client, session, drain, path, body, by) -> None:
    contact, message = failed_contact(session)
    post(client, "/dlr", wire.dlr(message.at_message_id, "AbsentSubscriber", CUSTOMER))
    drain()
    post(client, path, body)
    drain()
    assert status_of(session, contact) is ContactStatus.ACTIVE
    assert session.get(Contact, contact.id).reached_by == by


def test_an_older_proof_drained_late_does_not_undo_a_newer_failure(session) -> None:
    contact, message = failed_contact(session)
    t0 = datetime.now(UTC)
    apply(session, "dlr", wire.dlr(message.at_message_id, "AbsentSubscriber", CUSTOMER), t0)
    apply(session, "sms", wire.incoming_sms(CUSTOMER, "21512", "hi", "in-old"), t0 - timedelta(minutes=5))
    assert status_of(session, contact) is ContactStatus.INACTIVE
    assert session.get(Contact, contact.id).reached_at == t0 - timedelta(minutes=5)


def test_an_older_failure_drained_late_does_not_undo_a_newer_proof(session) -> None:
    contact, message = failed_contact(session)
    t0 = datetime.now(UTC)
    apply(session, "sms", wire.incoming_sms(CUSTOMER, "21512", "hi", "in-new"), t0)
    apply(session, "dlr", wire.dlr(message.at_message_id, "AbsentSubscriber", CUSTOMER), t0 - timedelta(minutes=5))
    assert status_of(session, contact) is ContactStatus.ACTIVE
    stored = session.get(Contact, contact.id)
    assert stored.last_sms_status == "AbsentSubscriber"  # the report is still recorded


def test_a_newer_proof_does_not_move_back_an_older_one(session) -> None:
    contact, _ = failed_contact(session)
    t0 = datetime.now(UTC)
    apply(session, "ussd", wire.ussd("ATUid_new", CUSTOMER, ""), t0)
    apply(session, "sms", wire.incoming_sms(CUSTOMER, "21512", "hi", "in-older"), t0 - timedelta(minutes=5))
    stored = session.scalars(select(Contact).where(Contact.id == contact.id)).one()
    assert (stored.reached_at, stored.reached_by) == (t0, "ussd")


def test_an_opted_out_or_invalid_contact_stays_so(client, session, drain) -> None:
    session.add_all(
        [
            Contact(phone=CUSTOMER, status=ContactStatus.INVALID, last_sms_status="AbsentSubscriber"),
            Contact(phone="+254711000002", status=ContactStatus.OPTED_OUT, last_sms_status="AbsentSubscriber"),
        ]
    )
    session.commit()
    post(client, "/receiveSMS", wire.incoming_sms(CUSTOMER, "21512", "hello", "in-2"))
    post(client, "/receiveSMS", wire.incoming_sms("+254711000002", "21512", "hello", "in-3"))
    drain()
    session.expire_all()
    statuses = {c.phone: c.status for c in session.scalars(select(Contact))}
    assert statuses == {CUSTOMER: ContactStatus.INVALID, "+254711000002": ContactStatus.OPTED_OUT}


def test_dry_run_shows_who_needs_a_call_and_what_that_costs(session, operator_headers, make_app) -> None:
    session.add_all(
        [
            Contact(phone="+254711000001", status=ContactStatus.INACTIVE),
            Contact(phone="+254711000002", status=ContactStatus.INACTIVE),
            Contact(phone="+254711000003", status=ContactStatus.PENDING),
            Contact(phone="+254711000004", status=ContactStatus.ACTIVE, channel_preference=Channel.VOICE),
            Contact(phone="+254711000005", status=ContactStatus.ACTIVE),
        ]
    )
    session.commit()
    priced = make_app(call_cost_estimate="2.50").test_client()
    dry = priced.post("/api/cycles", json={"message": "hi", "dry_run": True}, headers=operator_headers).get_json()
    assert dry["voice"] == 4
    assert dry["calls"] == {
        "contacts": 4,
        "by_reason": {"inactive": 2, "pending": 1, "chose_voice": 1},
        "estimated_cost": {"amount": "10.00", "currency": "KES"},
    }


def test_contact_answer_says_when_and_how_they_were_reached(client, session, drain, operator_headers) -> None:
    contact, _ = failed_contact(session)
    session_id = acknowledged_call(session, client, contact)
    post(client, "/voice", wire.voice_final_answered(session_id, CUSTOMER, AT_NUMBER, duration=20))
    drain()
    body = client.get(f"/api/contacts/{CUSTOMER}", headers=operator_headers).get_json()
    assert body["reached_by"] == "call" and body["reached_at"] is not None
    assert body["calls"][0]["grade"] == "acknowledged"
