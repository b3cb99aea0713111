"""USSD "my last message" (issue 14): the customer reads the last message Reach sent them, a screen at a time,
and confirms it; the confirmation counts as reaching them in that cycle."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from shared import ussd
from shared.models import Call, Contact, ContactStatus, Cycle, CycleItem, CycleState, ItemState, Message, UssdSession
from tests.conftest import WEBHOOK_TOKEN
from tests.cycle_support import record_items_range

PHONE = "+254722000001"
LONG = " ".join(f"Word{i:03d}" for i in range(90))  # 630 characters: four or five screens


def post_step(client, text: str, session_id: str = "ATUid_m1", phone: str = PHONE) -> str:
    response = client.post(
        f"/ussd?token={WEBHOOK_TOKEN}",
        data={"sessionId": session_id, "serviceCode": "*384*303#", "phoneNumber": phone, "text": text},
    )
    assert response.status_code == 200 and response.mimetype == "text/plain"
    return response.get_data(as_text=True)


def sent_in_cycle(session, text: str, phone: str = PHONE) -> tuple[Cycle, CycleItem]:
    contact = session.scalars(select(Contact).where(Contact.phone == phone)).first()
    if contact is None:
        contact = Contact(phone=phone, status=ContactStatus.INACTIVE)
        session.add(contact)
    cycle = Cycle(message=text, state=CycleState.DONE)
    session.add(cycle)
    session.flush()
    item = CycleItem(cycle_id=cycle.id, contact_id=contact.id, channel="sms", state=ItemState.SENT)
    session.add(item)
    session.flush()
    message = Message(
        contact_id=contact.id, cycle_id=cycle.id, cycle_item_id=item.id, phone=phone, text=text, send_state="sent"
    )
    session.add(message)
    record_items_range(session, cycle.id)
    session.commit()
    return cycle, item


def test_main_menu_offers_the_last_message() -> None:
    assert "5. My last message" in ussd.MAIN_MENU
    assert len(ussd.MAIN_MENU) <= ussd.MAX_SCREEN


def test_pages_fit_a_screen_and_keep_every_word() -> None:
    pages = ussd.message_pages(LONG)
    assert len(pages) > 1
    screens = [ussd.last_message_screen(LONG, page) for page in range(len(pages))]
    assert all(s.startswith("CON ") and len(s) <= ussd.MAX_SCREEN for s in screens)
    assert " ".join(pages).split() == LONG.split()
    assert all("2. More" in s for s in screens[:-1]) and "2. More" not in screens[-1]
    assert all("1. Got it" in s for s in screens)


@pytest.mark.parametrize(
    ("text", "effect", "page"),
    [
        ("5", ussd.Effect.SHOW_LAST_MESSAGE, 0),
        ("5*2", ussd.Effect.SHOW_LAST_MESSAGE, 1),
        ("5*2*2", ussd.Effect.SHOW_LAST_MESSAGE, 2),
        ("5*1", ussd.Effect.CONFIRM_READ, 0),
        ("5*2*2*1", ussd.Effect.CONFIRM_READ, 0),
        ("5*3", ussd.Effect.NONE, 0),
        ("5*1*2", ussd.Effect.NONE, 0),
    ],
)
def test_menu_paths(text: str, effect: ussd.Effect, page: int) -> None:
    screen = ussd.step(text)
    assert (screen.effect, screen.page) == (effect, page)


def test_reads_the_last_message_page_by_page(client, session) -> None:
    sent_in_cycle(session, "An older message.")
    sent_in_cycle(session, LONG)
    pages = ussd.message_pages(LONG)
    first = post_step(client, "5")
    assert first.startswith("CON ") and pages[0] in first and "2. More" in first
    second = post_step(client, "5*2")
    assert pages[1] in second
    last = post_step(client, "*".join(["5"] + ["2"] * (len(pages) - 1)))
    assert pages[-1] in last and "2. More" not in last
    beyond = post_step(client, "*".join(["5"] + ["2"] * (len(pages) + 3)))
    assert beyond == last  # "more" past the end shows the end again
    assert all(len(body) <= ussd.MAX_SCREEN for body in (first, second, last))


def test_a_call_newer_than_the_last_sms_is_the_last_message(client, session) -> None:
    _, item = sent_in_cycle(session, "The SMS.")
    session.add(Call(contact_id=item.contact_id, phone=PHONE, message="The spoken one.", send_state="sent"))
    session.commit()
    assert "The spoken one." in post_step(client, "5")


def test_nothing_sent_yet(client, session) -> None:
    session.add(Contact(phone=PHONE, status=ContactStatus.NEW))
    session.commit()
    body = post_step(client, "5")
    assert body.startswith("END ") and "not sent you" in body


def test_another_numbers_message_is_never_shown(client, session) -> None:
    sent_in_cycle(session, "Private to the other customer.", phone="+254722000002")
    assert "Private" not in post_step(client, "5")


def test_confirming_counts_as_reached_in_that_cycle(client, session, drain, operator_headers) -> None:
    older, older_item = sent_in_cycle(session, "An older message.")
    cycle, item = sent_in_cycle(session, "Your bill is due on Friday.")
    for text in ("", "5", "5*1"):
        post_step(client, text)
    assert post_step(client, "5*1").startswith("END ")
    drain()
    session.expire_all()
    assert session.get(CycleItem, item.id).confirmed_at is not None
    assert session.get(CycleItem, older_item.id).confirmed_at is None
    assert session.scalars(select(UssdSession)).one().outcome == "read_confirmed"
    report = client.get(f"/api/cycles/{cycle.id}", headers=operator_headers).get_json()
    assert report["reached"] == {"contacts": 1, "ussd_confirmed": 1}
    assert client.get(f"/api/cycles/{older.id}", headers=operator_headers).get_json()["reached"] == {
        "contacts": 0,
        "ussd_confirmed": 0,
    }
    # The customer proved reachable (any USSD session does).
    assert session.scalars(select(Contact)).one().reached_by == "ussd"


def test_confirming_twice_keeps_the_first_time(client, session, drain) -> None:
    _, item = sent_in_cycle(session, "Your bill is due on Friday.")
    post_step(client, "5*1", session_id="a")
    drain()
    session.expire_all()
    first = session.get(CycleItem, item.id).confirmed_at
    post_step(client, "5*1", session_id="b")
    drain()
    session.expire_all()
    assert session.get(CycleItem, item.id).confirmed_at == first


def test_cycle_show_prints_who_was_reached(client, session, drain) -> None:
    from click.testing import CliRunner

    from reach_cli.main import cli

    cycle, _ = sent_in_cycle(session, "Your bill is due on Friday.")
    post_step(client, "5*1")
    drain()
    result = CliRunner().invoke(cli, ["cycle", "show", str(cycle.id)], prog_name="reach", catch_exceptions=False)
    assert "reached    1 contacts (1 confirmed on USSD)" in result.output


def test_reached_counts_each_contact_once_whatever_reached_them(session) -> None:
    from datetime import UTC, datetime

    from shared.last_message import reached_counts

    cycle = Cycle(message="hi", state=CycleState.DONE)
    contacts = [Contact(phone=f"+25472200000{i}", status=ContactStatus.ACTIVE) for i in range(1, 6)]
    session.add_all([cycle, *contacts])
    session.flush()
    items = [CycleItem(cycle_id=cycle.id, contact_id=c.id, channel="sms", state=ItemState.SENT) for c in contacts]
    session.add_all(items)
    session.flush()

    def sms(item: CycleItem, status: str) -> Message:
        return Message(cycle_id=cycle.id, cycle_item_id=item.id, phone="x", text="hi", send_state="sent", status=status)

    def call(item: CycleItem, outcome: str) -> Call:
        return Call(cycle_id=cycle.id, cycle_item_id=item.id, phone="x", outcome=outcome)

    sent = [
        sms(items[0], "Success"),  # delivered
        call(items[1], "answered"),  # answered
        sms(items[2], "Success"),  # delivered and confirmed: once
        sms(items[3], "AbsentSubscriber"),  # not reached
        call(items[4], "retry_later"),  # not reached
    ]
    session.add_all(sent)
    session.flush()
    for item, row in zip(items, sent, strict=True):
        item.message_id, item.call_id = (row.id, None) if isinstance(row, Message) else (None, row.id)
    items[2].confirmed_at = datetime.now(UTC)
    record_items_range(session, cycle.id)
    session.commit()
    assert reached_counts(session, cycle.id) == {"contacts": 3, "ussd_confirmed": 1}
