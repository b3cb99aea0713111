"""The USSD menu: every path, every screen short enough, and its effect on the contact."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from shared import ussd
from shared.models import Channel, Contact, ContactStatus, UssdSession
from tests.conftest import WEBHOOK_TOKEN

PHONE = "+254722000001"


def post_step(client, text: str, session_id: str = "ATUid_s1"):
    return client.post(
        f"/ussd?token={WEBHOOK_TOKEN}",
        data={"sessionId": session_id, "serviceCode": "*384*303#", "phoneNumber": PHONE, "text": text},
    )


@pytest.mark.parametrize(
    ("text", "starts", "effect"),
    [
        ("", "CON ", ussd.Effect.NONE),
        ("1", "END ", ussd.Effect.SHOW_STATUS),
        ("2", "END ", ussd.Effect.PREFER_SMS),
        ("3", "END ", ussd.Effect.PREFER_VOICE),
        ("4", "CON ", ussd.Effect.NONE),
        ("4*1", "END ", ussd.Effect.OPT_OUT),
        ("4*2", "END ", ussd.Effect.NONE),
        ("9", "END ", ussd.Effect.NONE),
        ("4*7", "END ", ussd.Effect.NONE),
        ("1*1*1", "END ", ussd.Effect.NONE),
    ],
)
def test_menu_paths(text: str, starts: str, effect: ussd.Effect) -> None:
    screen = ussd.step(text)
    assert screen.text.startswith(starts)
    assert screen.effect is effect
    assert len(screen.text) < ussd.MAX_SCREEN


def test_first_screen_lists_the_four_choices() -> None:
    body = ussd.step("").text
    for choice in ("1. My status", "2. Get messages by SMS", "3. Get messages by voice call", "4. Stop messages"):
        assert choice in body


@pytest.mark.parametrize("status", [s.value for s in ContactStatus])
@pytest.mark.parametrize("preference", [None, "sms", "voice"])
def test_every_status_screen_fits(status: str, preference: str | None) -> None:
    screen = ussd.status_screen("+254722000001", status, preference)
    assert screen.startswith("END ")
    assert len(screen) < ussd.MAX_SCREEN


def test_endpoint_answers_plain_text_menu(client) -> None:
    response = post_step(client, "")
    assert response.status_code == 200
    assert response.mimetype == "text/plain"
    assert response.get_data(as_text=True) == ussd.MAIN_MENU


def test_status_of_unknown_number(client) -> None:
    body = post_step(client, "1").get_data(as_text=True)
    assert body.startswith("END ") and "not on our list" in body


def test_status_of_known_contact(client, session) -> None:
    session.add(Contact(phone=PHONE, status=ContactStatus.INACTIVE, channel_preference=Channel.VOICE))
    session.commit()
    body = post_step(client, "1").get_data(as_text=True)
    assert "did not reach you" in body and "voice call" in body


@pytest.mark.parametrize(
    ("text", "status", "preference", "outcome"),
    [
        ("2", ContactStatus.NEW, Channel.SMS, "preference:sms"),
        ("3", ContactStatus.NEW, Channel.VOICE, "preference:voice"),
        ("4*1", ContactStatus.OPTED_OUT, None, "opt_out"),
    ],
)
def test_choice_is_applied_to_contact(client, session, drain, text, status, preference, outcome) -> None:
    for step_text in ["", text.split("*")[0], text] if "*" in text else ["", text]:
        assert post_step(client, step_text).status_code == 200
    drain()
    contact = session.scalars(select(Contact).where(Contact.phone == PHONE)).one()
    assert contact.status is status
    assert contact.channel_preference == preference
    stored = session.scalars(select(UssdSession)).one()
    assert stored.last_text == text and stored.outcome == outcome and stored.phone == PHONE


def test_choosing_a_channel_after_opting_out_opts_back_in(client, session, drain) -> None:
    post_step(client, "4*1", session_id="a")
    drain()
    post_step(client, "2", session_id="b")
    drain()
    contact = session.scalars(select(Contact).where(Contact.phone == PHONE)).one()
    assert contact.status is ContactStatus.NEW
    assert contact.channel_preference is Channel.SMS
    assert contact.opted_out_at is None


def test_missing_phone_is_400(client) -> None:
    response = client.post(f"/ussd?token={WEBHOOK_TOKEN}", data={"sessionId": "x", "text": ""})
    assert response.status_code == 400
    assert response.get_json() == {"error": "missing field: phoneNumber"}
