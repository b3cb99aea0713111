"""The dashboard's cycle page (who the cycle did not reach, and why) and contact page (one contact's timeline):
what a signed-in operator sees, through the Flask test client against the real Postgres; the rows are what the
worker and the drain would have written for each outcome."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

import pytest
from sqlalchemy import insert, select, text

from shared import cycle_failures
from shared.cycle_items import of_cycle
from shared.models import (
    Call,
    Channel,
    Contact,
    ContactStatus,
    Cycle,
    CycleItem,
    CycleState,
    DlrEvent,
    IncomingSms,
    ItemState,
    Message,
    UssdSession,
)
from tests.conftest import API_TOKEN
from tests.cycle_support import record_items_range
from tests.test_dashboard import sign_in

DELIVERED, FAILED, ANSWERED, MISSED, WAITING = (f"+2547110000{n}" for n in range(61, 66))
T0 = datetime(2026, 12, 6, 9, 0, tzinfo=UTC)


@pytest.fixture
def operator(client: Any) -> Any:
    """A browser signed in to the dashboard."""
    assert sign_in(client, API_TOKEN).status_code == 303
    return client


def page_of(response: Any) -> str:
    assert response.status_code == 200, response.get_data(as_text=True)
    return response.get_data(as_text=True)


def rows_by_phone(page: str) -> dict[str, str]:
    """The failure table's rows (their HTML), by the number each is about."""
    return dict(re.findall(r'<tr data-phone="([^"]*)"[^>]*>(.*?)</tr>', page, re.S))


def next_link(page: str) -> str | None:
    found = re.search(r'<a [^>]*id="next-page"[^>]*href="([^"]+)"', page) or re.search(
        r'<a [^>]*href="([^"]+)"[^>]*id="next-page"', page
    )
    return found.group(1).replace("&amp;", "&") if found else None


# -- the cycle page ----------------------------------------------------------------------------------------------


@pytest.fixture
def cycle_id(session: Any) -> int:
    """Five contacts: an SMS delivered, an SMS failed, a call answered, a call not answered, a call not yet made."""
    cycle = Cycle(message="Your bill is ready", state=CycleState.DISPATCHING, created_at=T0)
    names = {
        DELIVERED: "Amina",
        FAILED: "<script>alert(1)</script>",
        ANSWERED: None,
        MISSED: "Otieno",
        WAITING: "Wanjiru",
    }
    contacts = {phone: Contact(phone=phone, name=name, status=ContactStatus.ACTIVE) for phone, name in names.items()}
    session.add_all([cycle, *contacts.values()])
    session.flush()
    sms = {
        DELIVERED: Message(phone=DELIVERED, text="Hi", send_state="sent", status="Success"),
        FAILED: Message(
            phone=FAILED, text="Hi", send_state="sent", status="Failed", failure_reason="UserInBlacklist",
            network_code="63902",
        ),
    }  # fmt: skip
    calls = {
        ANSWERED: Call(phone=ANSWERED, send_state="sent", status="Success", outcome="answered", ended_at=T0),
        MISSED: Call(
            phone=MISSED, send_state="sent", status="NotAnswered", outcome="not_answered", hangup_cause="NO_ANSWER",
            ended_at=T0,
        ),
    }  # fmt: skip
    for row in [*sms.values(), *calls.values()]:
        row.cycle_id, row.contact_id = cycle.id, contacts[row.phone].id
    session.add_all([*sms.values(), *calls.values()])
    session.flush()
    states = {DELIVERED: ItemState.SENT, FAILED: ItemState.SENT, ANSWERED: ItemState.DONE, MISSED: ItemState.DONE}
    for phone, contact in contacts.items():
        session.add(
            CycleItem(
                cycle_id=cycle.id,
                contact_id=contact.id,
                channel=Channel.SMS if phone in sms else Channel.VOICE,
                state=states.get(phone, ItemState.PENDING),
                message_id=sms[phone].id if phone in sms else None,
                call_id=calls[phone].id if phone in calls else None,
            )
        )
    record_items_range(session, cycle.id)
    session.commit()
    return cycle.id


def test_the_cycle_page_shows_who_was_not_reached_and_why(operator: Any, cycle_id: int) -> None:
    page = page_of(operator.get(f"/dashboard/cycles/{cycle_id}"))

    rows = rows_by_phone(page)
    assert set(rows) == {FAILED, MISSED, WAITING}  # the delivered SMS and the answered call are not there
    assert "UserInBlacklist" in rows[FAILED] and "63902" in rows[FAILED] and "Failed" in rows[FAILED]
    assert "NO_ANSWER" in rows[MISSED]
    assert "pending" in rows[WAITING]
    # The number leads to the contact's page.
    assert f'href="/dashboard/contacts/{quote(FAILED, safe="")}"' in rows[FAILED]
    # The summary is the cycle's report: state, message, counts and the reasons counted.
    assert "dispatching" in page and "Your bill is ready" in page
    assert re.search(r'data-field="sms-sent">\s*2\s*<', page) and re.search(
        r'data-field="voice-answered">\s*1\s*<', page
    )
    assert "2026-12-06 09:00:00 UTC" in page  # times say their time zone


def test_a_contact_name_is_shown_as_text_never_run(operator: Any, cycle_id: int) -> None:
    page = page_of(operator.get(f"/dashboard/cycles/{cycle_id}"))
    assert "<script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page


def test_an_erased_contact_stays_on_the_cycle_page_without_its_number(
    operator: Any, cycle_id: int, operator_headers: dict[str, str]
) -> None:
    assert operator.delete(f"/api/contacts/{quote(FAILED, safe='')}", headers=operator_headers).status_code == 204
    rows = rows_by_phone(page_of(operator.get(f"/dashboard/cycles/{cycle_id}")))
    assert set(rows) == {"", MISSED, WAITING}
    assert "erased" in rows[""] and "UserInBlacklist" in rows[""] and "/dashboard/contacts/" not in rows[""]


def many_failures(session: Any, failed: int, delivered_between: int = 1) -> int:
    """A cycle whose SMS failed for `failed` contacts, with delivered ones in between (not on the page)."""
    cycle = Cycle(message="Hi", state=CycleState.DONE)
    session.add(cycle)
    session.flush()
    total = failed * (delivered_between + 1)
    phones = [f"+2547112{n:05d}" for n in range(total)]
    session.execute(insert(Contact), [{"phone": phone, "status": ContactStatus.ACTIVE} for phone in phones])
    ids = dict(session.execute(select(Contact.phone, Contact.id)).all())
    for n, phone in enumerate(phones):
        ok = n % (delivered_between + 1) != 0
        message = Message(
            phone=phone, text="Hi", cycle_id=cycle.id, contact_id=ids[phone], send_state="sent",
            status="Success" if ok else "Failed", failure_reason=None if ok else f"Reason{n:05d}", network_code="63902",
        )  # fmt: skip
        session.add(message)
        session.flush()
        session.add(
            CycleItem(
                cycle_id=cycle.id,
                contact_id=ids[phone],
                channel=Channel.SMS,
                state=ItemState.SENT,
                message_id=message.id,
            )
        )
    record_items_range(session, cycle.id)
    session.commit()
    return cycle.id


def test_the_next_page_shows_the_next_contacts_and_not_the_first_ones(operator: Any, session: Any) -> None:
    cycle = many_failures(session, failed=cycle_failures.PAGE_SIZE + 10)

    first = page_of(operator.get(f"/dashboard/cycles/{cycle}"))
    first_rows = rows_by_phone(first)
    assert len(first_rows) == cycle_failures.PAGE_SIZE
    link = next_link(first)
    assert link is not None and re.fullmatch(rf"/dashboard/cycles/{cycle}\?after=\d+", link), link

    second = page_of(operator.get(link))
    second_rows = rows_by_phone(second)
    assert len(second_rows) == 10
    assert not set(first_rows) & set(second_rows)
    assert next_link(second) is None
    # Together, in order, exactly the failed ones (every other contact).
    expected = [f"+2547112{n:05d}" for n in range(0, 2 * (cycle_failures.PAGE_SIZE + 10), 2)]
    assert [*first_rows, *second_rows] == expected


def test_a_page_reads_a_bounded_window_of_the_cycle(operator: Any, session: Any, monkeypatch: Any) -> None:
    """Mostly delivered: a page looks at no more than SCAN_LIMIT items and says where to go on from."""
    monkeypatch.setattr(cycle_failures, "SCAN_LIMIT", 40)
    cycle = many_failures(session, failed=8, delivered_between=9)  # 80 items, one failed in ten

    seen: list[str] = []
    link: str | None = f"/dashboard/cycles/{cycle}"
    pages = 0
    while link:
        page = page_of(operator.get(link))
        seen += rows_by_phone(page)
        link, pages = next_link(page), pages + 1
        assert pages < 10
    assert pages == 2  # 40 items, then the last 40 (and nothing after them: no link to an empty page)
    assert seen == [f"+2547112{n:05d}" for n in range(0, 80, 10)]


def test_the_failure_query_reads_the_cycles_items_through_an_index(session: Any) -> None:
    """A page is a range of the primary key within the cycle's recorded range of ids, never a scan of the table
    (a cycle can be 1M items), with no index of the cycle's items to fill at planning (shared/cycle_items.py)."""
    cycle = Cycle(message="planned", state=CycleState.DISPATCHING, first_item_id=1000, last_item_id=2000)
    session.add(cycle)
    session.flush()
    window = cycle_failures.window_statement(of_cycle(session, cycle.id), 0, 50)
    statement = window.compile(session.get_bind(), compile_kwargs={"literal_binds": True})
    session.execute(text("SET enable_seqscan = off"))
    plan = "\n".join(session.scalars(text(f"EXPLAIN {statement}")))
    session.rollback()
    assert "Index Cond: ((id >= 1000) AND (id <= 2000)" in plan and "on pk_cycle_items" in plan, plan


def test_an_unknown_cycle_is_a_404_page(operator: Any) -> None:
    response = operator.get("/dashboard/cycles/999")
    assert response.status_code == 404 and "no cycle 999" in response.get_data(as_text=True)
    assert response.headers["Cache-Control"] == "no-store"


def test_a_bad_cursor_is_refused(operator: Any, cycle_id: int) -> None:
    assert operator.get(f"/dashboard/cycles/{cycle_id}?after=abc").status_code == 400


# -- the contact page --------------------------------------------------------------------------------------------


@pytest.fixture
def contact(session: Any) -> Contact:
    """A contact whose SMS failed, whose fallback call was not answered, who then used USSD and texted STOP."""
    person = Contact(
        phone=FAILED, name="<b>Amina</b>", status=ContactStatus.OPTED_OUT, tags=["nairobi"], language="sw",
        opted_out_at=T0 + timedelta(minutes=40), consent_at=T0 + timedelta(minutes=40), consent_by="customer: SMS STOP",
    )  # fmt: skip
    cycle = Cycle(message="Your bill is ready", state=CycleState.DONE)
    session.add_all([person, cycle])
    session.flush()
    message = Message(
        phone=FAILED, contact_id=person.id, cycle_id=cycle.id, text="Your bill is <ready>", send_state="sent",
        send_status="Success", at_message_id="ATXid_f1", status="Failed", failure_reason="DeliveryFailure",
        network_code="63902", created_at=T0, status_at=T0 + timedelta(minutes=5),
    )  # fmt: skip
    report = DlrEvent(
        at_message_id="ATXid_f1", status="Failed", failure_reason="DeliveryFailure", phone=FAILED,
        network_code="63902", received_at=T0 + timedelta(minutes=5), applied_at=T0 + timedelta(minutes=5),
    )  # fmt: skip
    call = Call(
        phone=FAILED, contact_id=person.id, cycle_id=cycle.id, session_id="ATVId_c1", send_state="sent",
        status="NotAnswered", outcome="not_answered", hangup_cause="NO_ANSWER", duration_seconds=0, dtmf_digits="1",
        created_at=T0 + timedelta(minutes=20), ended_at=T0 + timedelta(minutes=21),
    )  # fmt: skip
    ussd = UssdSession(
        session_id="ATUid_u1", phone=FAILED, service_code="*384*1#", last_text="1",
        started_at=T0 + timedelta(minutes=30), updated_at=T0 + timedelta(minutes=30),
    )  # fmt: skip
    stop = IncomingSms(
        at_id="in-1", from_phone=FAILED, to="12345", text="STOP", keyword="STOP", contact_id=person.id,
        received_at=T0 + timedelta(minutes=40),
    )  # fmt: skip
    session.add_all([message, report, call, ussd, stop])
    session.commit()
    return person


def test_the_contact_page_shows_the_contact_and_its_timeline_newest_first(operator: Any, contact: Contact) -> None:
    page = page_of(operator.get(f"/dashboard/contacts/{quote(FAILED, safe='')}"))

    assert "&lt;b&gt;Amina&lt;/b&gt;" in page and "<b>Amina</b>" not in page
    assert "opted_out" in page and "nairobi" in page and ">sw<" in page
    assert "customer: SMS STOP" in page and "2026-12-06 09:40:00 UTC" in page  # who changed consent, and when
    events = re.findall(r'<tr data-event="(\w+)"[^>]*>(.*?)</tr>', page, re.S)
    assert [kind for kind, _ in events] == ["consent", "incoming", "ussd", "call", "dlr", "sms"]
    found = dict(events)
    assert "DeliveryFailure" in found["dlr"] and "63902" in found["dlr"] and "09:05:00 UTC" in found["dlr"]
    assert "NO_ANSWER" in found["call"] and "not_answered" in found["call"] and ">1<" in found["call"]
    assert "Your bill is &lt;ready&gt;" in found["sms"] and "Success" in found["sms"]
    assert "STOP" in found["incoming"] and "*384*1#" in found["ussd"]
    assert 'id="more"' not in page


def test_the_contact_page_takes_the_number_as_the_api_does(operator: Any, contact: Contact) -> None:
    local = page_of(operator.get("/dashboard/contacts/0711000062"))
    assert FAILED in local and "DeliveryFailure" in local
    assert operator.get("/dashboard/contacts/not-a-number").status_code == 404


def test_the_timeline_pages_on_even_through_events_at_the_same_time(operator: Any, session: Any) -> None:
    person = Contact(phone=FAILED, status=ContactStatus.ACTIVE)
    session.add(person)
    session.flush()
    # Sixty messages, all at the same instant: the cursor must still neither repeat nor skip any.
    session.execute(
        insert(Message),
        [
            {
                "phone": FAILED,
                "contact_id": person.id,
                "text": f"message {n:02d}",
                "send_state": "sent",
                "created_at": T0,
            }
            for n in range(60)
        ],
    )
    session.commit()

    first = page_of(operator.get(f"/dashboard/contacts/{quote(FAILED, safe='')}"))
    more = re.search(r'<a [^>]*id="more"[^>]*href="([^"]+)"', first)
    assert more, first
    second = page_of(operator.get(more.group(1).replace("&amp;", "&")))
    texts = re.findall(r"message (\d\d)", first), re.findall(r"message (\d\d)", second)
    assert len(texts[0]) == 50 and len(texts[1]) == 10
    assert texts[0] + texts[1] == [f"{n:02d}" for n in reversed(range(60))]
    assert 'id="more"' not in second


@pytest.mark.parametrize("cursor", ["abc", "1.2", "1.9.1", "9" * 19 + ".0.1", "1.0." + "9" * 19])
def test_a_bad_timeline_cursor_is_refused(operator: Any, contact: Contact, cursor: str) -> None:
    response = operator.get(f"/dashboard/contacts/{quote(FAILED, safe='')}?before={cursor}")
    assert response.status_code == 400 and "not a timeline cursor" in response.get_data(as_text=True)


def test_an_unknown_or_erased_contact_is_a_404(
    operator: Any, contact: Contact, operator_headers: dict[str, str]
) -> None:
    unknown = operator.get("/dashboard/contacts/%2B254711000099")
    assert unknown.status_code == 404 and "no contact +254711000099" in unknown.get_data(as_text=True)
    assert operator.delete(f"/api/contacts/{quote(FAILED, safe='')}", headers=operator_headers).status_code == 204
    response = operator.get(f"/dashboard/contacts/{quote(FAILED, safe='')}")
    assert response.status_code == 404 and "DeliveryFailure" not in response.get_data(as_text=True)


# -- who may see them --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/dashboard/cycles/1", "/dashboard/contacts/%2B254711000061"])
def test_without_a_session_the_pages_send_to_sign_in(client: Any, path: str) -> None:
    response = client.get(path)
    assert response.status_code == 303 and response.headers["Location"].endswith("/dashboard/login")
