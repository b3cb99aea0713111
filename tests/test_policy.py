"""One test per row of the status policy table: each AT value does to a contact what the table says.

The expectations are written out here, independently of `POLICY`, so changing a row means changing its
test; `test_every_row_has_a_test` fails when a row is added without one.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest

from shared.at_client import SmsRecipient
from shared.callbacks import Dlr, VoiceEvent
from shared.models import Call, Contact, ContactStatus, Message
from shared.status_policy import POLICY, Action, Kind, decide
from worker import ingest, sending

NOW = datetime(2026, 11, 28, 9, 0, tzinfo=UTC)
PHONE = "+254711000001"

KEEP = None  # the contact's status is left as it was

SEND_EXPECTED = {
    "100": ("sent", ContactStatus.PENDING),
    "101": ("sent", ContactStatus.PENDING),
    "102": ("sent", ContactStatus.PENDING),
    "401": ("failed", KEEP),
    "402": ("failed", KEEP),
    "403": ("failed", ContactStatus.INVALID),
    "404": ("failed", ContactStatus.INVALID),
    "405": ("failed", KEEP),
    "406": ("failed", ContactStatus.OPTED_OUT),
    "407": ("failed", ContactStatus.INACTIVE),
    "409": ("failed", KEEP),
    "502": ("failed", ContactStatus.INACTIVE),
}
#: Send codes that are retried, not recorded (tested through the send task in test_worker).
SEND_RETRIED = {"500", "501"}
SEND_PAUSES = {"402", "405"}

DLR_EXPECTED = {
    "Sent": ContactStatus.PENDING,
    "Submitted": ContactStatus.PENDING,
    "Buffered": ContactStatus.PENDING,
    "Expired": ContactStatus.INACTIVE,
    "AbsentSubscriber": ContactStatus.INACTIVE,
    "Rejected": ContactStatus.INACTIVE,
    "Failed": ContactStatus.INACTIVE,
    "Success": ContactStatus.ACTIVE,
}

FAILURE_EXPECTED = {
    "InsufficientCredit": ContactStatus.INACTIVE,
    "InvalidLinkId": ContactStatus.INACTIVE,
    "UserIsInactive": ContactStatus.INACTIVE,
    "UserInBlackList": ContactStatus.OPTED_OUT,
    "UserAccountSuspended": ContactStatus.INACTIVE,
    "NotNetworkSubcriber": ContactStatus.INACTIVE,
    "NotNetworkSubscriber": ContactStatus.INACTIVE,
    "UserNotSubscribedToProduct": ContactStatus.INACTIVE,
    "UserDoesNotExist": ContactStatus.INVALID,
    "DeliveryFailure": ContactStatus.INACTIVE,
    "DoNotDisturbRejection": ContactStatus.INACTIVE,
}

HANGUP_EXPECTED = {
    "NORMAL_CLEARING": ("answered", KEEP),
    "NO_ANSWER": ("retry_later", KEEP),
    "NO_USER_RESPONSE": ("retry_later", KEEP),
    "USER_BUSY": ("retry_later", KEEP),
    "SUBSCRIBER_ABSENT": ("retry_later", KEEP),
    "NORMAL_TEMPORARY_FAILURE": ("retry_later", KEEP),
    "RECOVERY_ON_TIMER_EXPIRE": ("retry_later", KEEP),
    "SERVICE_UNAVAILABLE": ("retry_later", KEEP),
    "CALL_REJECTED": ("unreached", KEEP),
    "UNALLOCATED_NUMBER": ("invalid", ContactStatus.INVALID),
    "USER_NOT_REGISTERED": ("invalid", ContactStatus.INVALID),
    "ORIGINATOR_CANCEL": ("unreached", KEEP),
    "LOSE_RACE": ("unreached", KEEP),
    "UNSPECIFIED": ("unreached", KEEP),
}


def test_every_row_has_a_test() -> None:
    tested = {
        Kind.SEND: set(SEND_EXPECTED) | SEND_RETRIED,
        Kind.DLR: set(DLR_EXPECTED),
        Kind.FAILURE: set(FAILURE_EXPECTED),
        Kind.HANGUP: set(HANGUP_EXPECTED),
    }
    rows = {(kind, value) for kind, value in POLICY}
    assert rows == {(kind, value) for kind, values in tested.items() for value in values}


def _contact_with_message(session, status: ContactStatus = ContactStatus.PENDING) -> tuple[Contact, Message]:
    contact = Contact(phone=PHONE, status=status)
    session.add(contact)
    session.flush()
    message = Message(contact_id=contact.id, phone=PHONE, text="hi", at_message_id="ATXid_" + "a" * 32)
    session.add(message)
    session.flush()
    contact.last_message_id = message.id
    session.commit()
    return contact, message


@pytest.mark.parametrize(("code", "expected"), sorted(SEND_EXPECTED.items()))
def test_send_status_code(session, code: str, expected: tuple[str, ContactStatus | None]) -> None:
    contact = Contact(phone=PHONE, status=ContactStatus.ACTIVE)
    session.add(contact)
    session.flush()
    message = Message(contact_id=contact.id, phone=PHONE, text="hi", send_state="submitting")
    session.add(message)
    session.commit()
    accepted = decide(Kind.SEND, code).action is Action.ACCEPTED
    recipient = SmsRecipient(
        number=PHONE,
        status_code=int(code),
        status="Success" if accepted else "SomeError",
        message_id="ATXid_" + "b" * 32 if accepted else None,
        cost=Decimal("0.8") if accepted else Decimal(0),
        currency="KES" if accepted else None,
    )
    sending.record_sms_result(session, message.id, recipient)
    session.commit()
    session.expire_all()
    state, contact_status = expected
    assert session.get(Message, message.id).send_state == state
    assert session.get(Contact, contact.id).status is (contact_status or ContactStatus.ACTIVE)


@pytest.mark.parametrize("code", sorted(SEND_RETRIED))
def test_send_codes_that_are_retried(code: str) -> None:
    assert decide(Kind.SEND, code).action is Action.RETRY


@pytest.mark.parametrize("code", sorted(SEND_PAUSES))
def test_send_codes_that_pause_a_cycle(code: str) -> None:
    assert decide(Kind.SEND, code).action is Action.PAUSE


@pytest.mark.parametrize(("status", "expected"), sorted(DLR_EXPECTED.items()))
def test_dlr_status(session, status: str, expected: ContactStatus) -> None:
    contact, message = _contact_with_message(session)
    ingest.apply_dlrs(session, [(NOW, Dlr(id=message.at_message_id, status=status, phone_number=PHONE))])
    session.commit()
    session.expire_all()
    assert session.get(Message, message.id).status == status
    assert session.get(Contact, contact.id).status is expected
    assert session.get(Contact, contact.id).last_sms_status == status


@pytest.mark.parametrize(("reason", "expected"), sorted(FAILURE_EXPECTED.items()))
def test_failure_reason(session, reason: str, expected: ContactStatus) -> None:
    contact, message = _contact_with_message(session)
    dlr = Dlr(id=message.at_message_id, status="Failed", phone_number=PHONE, failure_reason=reason)
    ingest.apply_dlrs(session, [(NOW, dlr)])
    session.commit()
    session.expire_all()
    stored = session.get(Contact, contact.id)
    assert stored.status is expected
    assert stored.last_failure_reason == reason


@pytest.mark.parametrize(("cause", "expected"), sorted(HANGUP_EXPECTED.items()))
def test_hangup_cause(session, cause: str, expected: tuple[str, ContactStatus | None]) -> None:
    contact = Contact(phone=PHONE, status=ContactStatus.INACTIVE)
    session.add(contact)
    session.flush()
    session.add(Call(contact_id=contact.id, phone=PHONE, session_id="ATVId_" + "c" * 32, send_state="sent"))
    session.commit()
    answered = cause == "NORMAL_CLEARING"
    event = VoiceEvent(
        session_id="ATVId_" + "c" * 32,
        is_active="0",
        caller_number=PHONE,
        call_session_state="Completed" if answered else "NotAnswered",
        status="Success" if answered else "NotAnswered",
        hangup_cause=cause,
        duration_in_seconds="12" if answered else "0",
        amount="1.5" if answered else "0",
        currency_code="KES",
    )
    ingest.apply_voice_event(session, NOW, event)
    session.commit()
    session.expire_all()
    outcome, contact_status = expected
    call = session.query(Call).one()
    assert call.outcome == outcome
    assert call.hangup_cause == cause
    stored = session.get(Contact, contact.id)
    assert stored.status is (contact_status or ContactStatus.INACTIVE)
    assert stored.last_hangup_cause == cause


# -- unknown values: accepted, conservative ------------------------------------------------------------------


def test_unknown_dlr_status_moves_nothing(session) -> None:
    contact, message = _contact_with_message(session)
    ingest.apply_dlrs(session, [(NOW, Dlr(id=message.at_message_id, status="Teleported", phone_number=PHONE))])
    session.commit()
    session.expire_all()
    assert session.get(Message, message.id).status is None
    assert session.get(Contact, contact.id).status is ContactStatus.PENDING


def test_unknown_failure_reason_is_a_failure(session) -> None:
    contact, message = _contact_with_message(session)
    dlr = Dlr(id=message.at_message_id, status="Failed", phone_number=PHONE, failure_reason="MoonPhase")
    ingest.apply_dlrs(session, [(NOW, dlr)])
    session.commit()
    session.expire_all()
    assert session.get(Contact, contact.id).status is ContactStatus.INACTIVE


def test_unknown_hangup_cause_is_unreached() -> None:
    event = VoiceEvent(session_id="s", is_active="0", hangup_cause="SOLAR_FLARE")
    assert ingest.call_outcome(event) is Action.UNREACHED


def test_unknown_send_code_touches_no_contact() -> None:
    assert decide(Kind.SEND, 777).action is Action.REJECTED
