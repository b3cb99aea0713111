"""From the inbox to Postgres: callbacks posted to the receiver, drained by the worker's own function.

These run the drain in-process against the real Redis and Postgres; `test_worker.py` runs the same path
through a real Celery worker process.
"""

from __future__ import annotations

import json
import random

import pytest
from sqlalchemy import func, select

from shared import inbox
from shared.models import (
    Call,
    CallEvent,
    Contact,
    ContactStatus,
    DlrEvent,
    IncomingSms,
    Message,
    RawCallback,
)
from simulator import wire
from tests.conftest import FIXTURES, WEBHOOK_TOKEN
from worker import ingest

CUSTOMER = "+254711000001"
AT_NUMBER = "+254711082369"


def post(client, path: str, body: dict[str, str]) -> None:
    response = client.post(f"{path}?token={WEBHOOK_TOKEN}", data=body)
    assert response.status_code == 200, response.get_data(as_text=True)


def contact_with_message(session, phone: str = CUSTOMER) -> tuple[Contact, Message]:
    contact = Contact(phone=phone, status=ContactStatus.PENDING)
    session.add(contact)
    session.flush()
    message = Message(contact_id=contact.id, phone=phone, text="hello", at_message_id=wire.new_message_id())
    session.add(message)
    session.flush()
    contact.last_message_id = message.id
    session.commit()
    return contact, message


def reload(session, obj):
    session.expire_all()
    return session.get(type(obj), obj.id)


def test_every_callback_is_kept_raw(client, session, drain) -> None:
    post(client, "/dlr", wire.dlr("ATXid_unknown", "Success", CUSTOMER))
    post(client, "/receiveSMS", wire.incoming_sms(CUSTOMER, "21512", "hello", "in-1"))
    post(client, "/voice", wire.voice_final_not_answered(wire.new_session_id(), CUSTOMER, AT_NUMBER, "NO_ANSWER"))
    post(client, "/ussd", wire.ussd("ATUid_1", CUSTOMER, ""))
    assert drain() >= 4
    raw = session.scalars(select(RawCallback).order_by(RawCallback.id)).all()
    assert [r.kind for r in raw] == ["dlr", "sms", "voice", "ussd"]
    assert raw[1].payload["text"] == "hello"


@pytest.mark.parametrize(
    ("sequence", "final_status", "contact_status"),
    [
        (["Sent", "Buffered", "Success"], "Success", ContactStatus.ACTIVE),
        (["Success", "Sent", "Buffered"], "Success", ContactStatus.ACTIVE),  # late intermediate reports
        (["Buffered", "Success", "Success", "Sent"], "Success", ContactStatus.ACTIVE),  # duplicate
        (["Sent", "Failed", "Buffered"], "Failed", ContactStatus.INACTIVE),
        (["Failed", "Success"], "Success", ContactStatus.ACTIVE),  # a handset receipt outranks a failure
        (["Success", "Failed"], "Success", ContactStatus.ACTIVE),
    ],
)
def test_statuses_only_move_forward(client, session, drain, sequence, final_status, contact_status) -> None:
    contact, message = contact_with_message(session)
    for status in sequence:
        post(client, "/dlr", wire.dlr(message.at_message_id, status, CUSTOMER))
        drain()  # one drain per report: each arrives in its own batch
    assert reload(session, message).status == final_status
    assert reload(session, contact).status is contact_status


def test_reports_in_one_batch_in_any_order(client, session, drain) -> None:
    contact, message = contact_with_message(session)
    sequence = ["Sent", "Submitted", "Buffered", "Success", "Sent", "Success"]
    random.Random(7).shuffle(sequence)
    for status in sequence:
        post(client, "/dlr", wire.dlr(message.at_message_id, status, CUSTOMER))
    drain()
    assert reload(session, message).status == "Success"
    assert reload(session, contact).status is ContactStatus.ACTIVE
    events = session.scalar(select(func.count()).select_from(DlrEvent))
    assert events == 4  # one per distinct status


def test_duplicate_report_changes_nothing(client, session, drain) -> None:
    _, message = contact_with_message(session)
    body = wire.dlr(message.at_message_id, "Failed", CUSTOMER, failure_reason="UserIsInactive")
    post(client, "/dlr", body)
    drain()
    first = reload(session, message).status_at
    post(client, "/dlr", body)
    drain()
    stored = reload(session, message)
    assert stored.status == "Failed" and stored.status_at == first
    assert session.scalar(select(func.count()).select_from(DlrEvent)) == 1
    assert session.scalar(select(func.count()).select_from(RawCallback)) == 2  # both posts are audited


def test_report_before_its_message_is_applied_when_the_message_appears(client, session, drain) -> None:
    message_id = wire.new_message_id()
    post(client, "/dlr", wire.dlr(message_id, "Success", CUSTOMER))
    drain()
    event = session.scalars(select(DlrEvent)).one()
    assert event.applied_at is None  # kept, waiting
    contact = Contact(phone=CUSTOMER, status=ContactStatus.PENDING)
    session.add(contact)
    session.flush()
    message = Message(contact_id=contact.id, phone=CUSTOMER, text="hi", at_message_id=message_id)
    session.add(message)
    session.flush()
    contact.last_message_id = message.id
    ingest.apply_pending_dlrs(session, [message_id])
    session.commit()
    assert reload(session, message).status == "Success"
    assert reload(session, contact).status is ContactStatus.ACTIVE
    assert reload(session, event).applied_at is not None


def test_housekeeping_applies_reports_that_raced_their_message(client, session, drain) -> None:
    message_id = wire.new_message_id()
    post(client, "/dlr", wire.dlr(message_id, "Failed", CUSTOMER, failure_reason="DeliveryFailure"))
    drain()
    contact = Contact(phone=CUSTOMER, status=ContactStatus.PENDING)
    session.add(contact)
    session.flush()
    message = Message(contact_id=contact.id, phone=CUSTOMER, text="hi", at_message_id=message_id)
    session.add(message)
    session.flush()
    contact.last_message_id = message.id
    session.commit()
    assert ingest.apply_pending_dlrs(session) == 1  # what housekeeping runs, with no ids
    session.commit()
    assert reload(session, contact).status is ContactStatus.INACTIVE


def test_report_for_an_older_message_leaves_the_contact_alone(client, session, drain) -> None:
    contact, old = contact_with_message(session)
    new = Message(contact_id=contact.id, phone=CUSTOMER, text="again", at_message_id=wire.new_message_id())
    session.add(new)
    session.flush()
    contact.last_message_id = new.id
    session.commit()
    post(client, "/dlr", wire.dlr(old.at_message_id, "Success", CUSTOMER))
    drain()
    assert reload(session, old).status == "Success"
    assert reload(session, contact).status is ContactStatus.PENDING


def test_no_report_overrides_an_opt_out(client, session, drain) -> None:
    contact, message = contact_with_message(session)
    contact.status = ContactStatus.OPTED_OUT
    session.commit()
    post(client, "/dlr", wire.dlr(message.at_message_id, "Success", CUSTOMER))
    drain()
    stored = reload(session, contact)
    assert stored.status is ContactStatus.OPTED_OUT and stored.last_sms_status == "Success"


def test_unknown_message_id_changes_nothing(client, session, drain) -> None:
    contact, message = contact_with_message(session)
    post(client, "/dlr", wire.dlr("ATXid_" + "f" * 32, "Success", CUSTOMER))
    drain()
    assert reload(session, contact).status is ContactStatus.PENDING
    assert reload(session, message).status is None


@pytest.mark.parametrize("word", ["STOP", "stop", "StopAll", "UNSUBSCRIBE", "end", "Cancel", "STOP please"])
def test_opt_out_words(client, session, drain, word: str) -> None:
    contact, _ = contact_with_message(session)
    post(client, "/receiveSMS", wire.incoming_sms(CUSTOMER, "21512", word, f"in-{word}"))
    drain()
    stored = reload(session, contact)
    assert stored.status is ContactStatus.OPTED_OUT and stored.opted_out_at is not None
    assert session.scalars(select(IncomingSms)).one().keyword == word.split()[0].upper()


def test_stop_from_a_stranger_is_remembered(client, session, drain) -> None:
    post(client, "/receiveSMS", wire.incoming_sms("+254722999888", "21512", "STOP", "in-x"))
    drain()
    contact = session.scalars(select(Contact)).one()
    assert contact.phone == "+254722999888" and contact.status is ContactStatus.OPTED_OUT


def test_start_opts_back_in(client, session, drain) -> None:
    contact, _ = contact_with_message(session)
    post(client, "/receiveSMS", wire.incoming_sms(CUSTOMER, "21512", "STOP", "in-1"))
    drain()
    post(client, "/receiveSMS", wire.incoming_sms(CUSTOMER, "21512", "START", "in-2"))
    drain()
    stored = reload(session, contact)
    assert stored.status is ContactStatus.NEW and stored.opted_out_at is None


def test_ordinary_sms_is_stored_once_verbatim(client, session, drain) -> None:
    text = "Asante 😀 '; DROP TABLE contacts; --"
    body = wire.incoming_sms(CUSTOMER, "21512", text, "in-dup", link_id="link-1")
    post(client, "/receiveSMS", body)
    post(client, "/receiveSMS", body)
    drain()
    stored = session.scalars(select(IncomingSms)).one()
    assert stored.text == text and stored.keyword is None and stored.link_id == "link-1"


def test_seed_incoming_sms(client, session, drain) -> None:
    body = json.loads((FIXTURES / "seed" / "receiveSMS.json").read_text())
    response = client.post(f"/receiveSMS?token={WEBHOOK_TOKEN}", json=body)
    assert response.status_code == 200
    drain()
    stored = session.scalars(select(IncomingSms)).one()
    assert (stored.at_id, stored.text, stored.sent_date) == ("ATidx138920183226162773", "Ruby", "2018-07-10")


def test_voice_events_stored_once_per_session_and_state(client, session, drain) -> None:
    session_id = wire.new_session_id()
    contact = Contact(phone=CUSTOMER, status=ContactStatus.INACTIVE)
    session.add(contact)
    session.commit()
    steps = [
        wire.voice_active(session_id, CUSTOMER, AT_NUMBER),
        wire.voice_active(session_id, CUSTOMER, AT_NUMBER, dtmf_digits="1"),
        wire.voice_final_answered(session_id, CUSTOMER, AT_NUMBER, duration=39, amount="147.440"),
    ]
    for body in steps + steps:  # every step posted twice
        post(client, "/voice", body)
    drain()
    assert session.scalar(select(func.count()).select_from(CallEvent)) == 3
    call = session.scalars(select(Call)).one()
    assert (call.status, call.hangup_cause, call.duration_seconds, str(call.amount), call.currency) == (
        "Success",
        "NORMAL_CLEARING",
        39,
        "147.4400",
        "KES",
    )
    assert call.acknowledged and call.dtmf_digits == "1" and call.outcome == "answered"
    assert call.contact_id == contact.id and call.direction == "Outbound"
    stored = reload(session, contact)
    assert stored.last_call_status == "Success" and stored.last_hangup_cause == "NORMAL_CLEARING"


def test_final_voice_event_before_live_one_keeps_the_final_state(client, session, drain) -> None:
    session_id = wire.new_session_id()
    post(client, "/voice", wire.voice_final_answered(session_id, CUSTOMER, AT_NUMBER))
    drain()
    post(client, "/voice", wire.voice_active(session_id, CUSTOMER, AT_NUMBER))
    drain()
    call = session.scalars(select(Call)).one()
    assert call.call_session_state == "Completed" and call.ended_at is not None


def test_callback_adopts_our_call_still_waiting_for_at(client, session, drain) -> None:
    contact = Contact(phone=CUSTOMER, status=ContactStatus.INACTIVE)
    session.add(contact)
    session.flush()
    ours = Call(contact_id=contact.id, phone=CUSTOMER, message="hi", send_state="submitting")
    session.add(ours)
    session.commit()
    session_id = wire.new_session_id()
    post(client, "/voice", wire.voice_final_not_answered(session_id, CUSTOMER, AT_NUMBER, "USER_BUSY"))
    drain()
    call = session.scalars(select(Call)).one()
    assert call.id == ours.id and call.session_id == session_id and call.outcome == "retry_later"


def test_a_poison_callback_does_not_block_the_others(client, session, drain, redis_client) -> None:
    contact, message = contact_with_message(session)
    post(client, "/dlr", wire.dlr(message.at_message_id, "Success", CUSTOMER))
    # Something the receiver would never queue: a kind with a field the worker cannot parse.
    _, bad = inbox.encode("sms", {"from": "+254711000001", "to": "1", "id": "x" * 500})
    redis_client.lpush(inbox.INBOX, bad)
    drain()
    assert reload(session, contact).status is ContactStatus.ACTIVE
    assert redis_client.llen("reach:inbox:dead") == 1
    assert redis_client.llen(inbox.INBOX) == 0 and redis_client.zcard(inbox.CLAIMS) == 0


def test_a_batch_whose_drainer_died_is_recovered_once(client, session, drain, redis_client) -> None:
    contact, message = contact_with_message(session)
    post(client, "/dlr", wire.dlr(message.at_message_id, "Success", CUSTOMER))
    box = inbox.Inbox(redis_client)
    batch = box.claim(100)  # a drainer took it, then died before applying it
    assert batch is not None and box.depth() == 0
    assert box.recover_stale(stale_after=3600) == 0  # not stale yet
    assert box.recover_stale(stale_after=-1) == 1
    drain()
    assert reload(session, contact).status is ContactStatus.ACTIVE


def test_a_batch_applied_but_not_acknowledged_is_not_applied_twice(client, session, drain, redis_client) -> None:
    contact, _ = contact_with_message(session)
    post(client, "/receiveSMS", wire.incoming_sms(CUSTOMER, "21512", "STOP", "in-1"))
    box = inbox.Inbox(redis_client)
    batch = box.claim(100)
    ingest.apply_batch(session, batch.items)
    session.commit()  # committed, then the drainer died before `ack`
    post(client, "/receiveSMS", wire.incoming_sms(CUSTOMER, "21512", "START", "in-2"))
    drain()
    assert box.recover_stale(stale_after=-1) == 1  # the old STOP comes back...
    drain()
    assert reload(session, contact).status is ContactStatus.NEW  # ...and is not applied again
