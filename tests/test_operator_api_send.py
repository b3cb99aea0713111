"""One-off sends through `/communicate` (design §4), end to end with the Flask test client and Postgres.

No worker runs here. What a 202 from `/communicate` promises is a `queued` row and one send task handed to
Celery; the task is captured instead of published, so no later test's worker can pick up a stale send.
"""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from shared.models import Call, Channel, Contact, ContactStatus, Message
from tests.conftest import API_TOKEN, WEBHOOK_TOKEN
from tests.operator_api_support import SEED_PHONE, SEED_SEND, add_contact, bearer, error_of

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
