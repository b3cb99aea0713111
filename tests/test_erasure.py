"""`DELETE /api/contacts/<phone>` (design §4): the contact and its personal data are erased, as Kenya's Data
Protection Act 2019 expects; later callbacks about the number are answered 200 and dropped, except that a
STOP is still honoured: an opt-out outlives erasure, kept as a keyed hash of the number, never in clear.

The Flask test client (Redis inbox) against the real Postgres, callbacks drained in-process; the embedded
SQLite database gets the same erasure through the dialect fixture."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import Engine, insert, select, text
from sqlalchemy.orm import Session

from shared import cycles as shared_cycles
from shared import db
from shared.inbox import InboxItem, encode
from shared.models import Base, Call, Contact, ContactStatus, Cycle, CycleItem, CycleState, ItemState, Message
from shared.store import SqlStore, get_store
from simulator import wire
from tests.conftest import API_TOKEN, WEBHOOK_TOKEN
from worker import cycles, ingest

PHONE = "+254711000051"
NAME = "Wanjiku"
#: What must not be left anywhere: the number in any spelling (its national digits are in every one), the name.
TRACES = ("711000051", NAME)
OTHER = "+254711000052"
AT_NUMBER = "+254711082000"
HEADERS = {"Authorization": f"Bearer {API_TOKEN}"}


def post(client: Any, path: str, body: dict[str, str]) -> None:
    response = client.post(f"{path}?token={WEBHOOK_TOKEN}", data=body)
    assert response.status_code == 200, response.get_data(as_text=True)


def traces_in_database(engine: Engine) -> list[tuple[str, str]]:
    """(table, row) of every row in every table that still holds the number or the name."""
    found = []
    with engine.connect() as connection:
        for table in Base.metadata.sorted_tables:
            for row in connection.execute(select(table)):
                flat = " ".join(str(value) for value in row)
                if any(trace in flat for trace in TRACES):
                    found.append((table.name, flat))
    return found


def traces_in_redis(redis_client: Any) -> list[str]:
    found = []
    for key in redis_client.scan_iter("reach:*"):
        kind = redis_client.type(key)
        values = (
            [redis_client.get(key)] if kind == b"string" else redis_client.lrange(key, 0, -1) if kind == b"list" else []
        )
        flat = key.decode() + " " + " ".join(v.decode(errors="replace") for v in values if v)
        if any(trace in flat for trace in TRACES):
            found.append(flat)
    return found


def contact_json(client: Any, phone: str) -> Any:
    return client.get(f"/api/contacts/{phone}", headers=HEADERS)


@pytest.fixture
def history(client: Any, session: Session, drain: Any) -> dict[str, Any]:
    """A named, tagged contact with a cycle's SMS and call, their callbacks, an incoming SMS, a USSD session
    and a cached voice script; and another contact whose data must stay."""
    session.execute(
        insert(Contact),
        [
            {"phone": PHONE, "name": NAME, "status": ContactStatus.ACTIVE, "tags": ["vip"], "language": "sw"},
            {"phone": OTHER, "name": "Otieno", "status": ContactStatus.ACTIVE},
        ],
    )
    contact, other = (session.scalars(select(Contact).where(Contact.phone == p)).one() for p in (PHONE, OTHER))
    cycle_id = shared_cycles.start_cycle(session, "Hello, your order is ready")
    cycles.plan_cycle(session, cycle_id)
    items = {i.contact_id: i for i in session.scalars(select(CycleItem).where(CycleItem.cycle_id == cycle_id))}
    at_ids = {}
    for row in (contact, other):
        at_ids[row.phone] = wire.new_message_id()
        message = Message(
            contact_id=row.id, cycle_id=cycle_id, cycle_item_id=items[row.id].id, phone=row.phone,
            text=f"Hello {row.name}, your order is ready", send_state="sent", at_message_id=at_ids[row.phone],
            cost=Decimal("0.8"), currency="KES",
        )  # fmt: skip
        session.add(message)
        session.flush()
        items[row.id].state, items[row.id].message_id = ItemState.SENT, message.id
        row.last_message_id = message.id
    session_id = wire.new_session_id()
    session.add(
        Call(
            contact_id=contact.id, cycle_id=cycle_id, phone=PHONE, message=f"Hello {NAME}", send_state="sent",
            session_id=session_id,
        )
    )  # fmt: skip
    session.commit()
    get_store().remember_script(f"Hello {NAME}", phone=PHONE, session_id=session_id)
    for phone in (PHONE, OTHER):
        post(client, "/dlr", wire.dlr(at_ids[phone], "Success", phone))
    post(client, "/voice", wire.voice_final_answered(session_id, PHONE, AT_NUMBER, amount="3.0000"))
    post(client, "/receiveSMS", wire.incoming_sms(PHONE, "21512", f"Asante, {NAME} here", "in-erase-1"))
    post(client, "/ussd", wire.ussd("ATUid_erase_1", PHONE, "1"))
    drain()
    report = client.get(f"/api/cycles/{cycle_id}", headers=HEADERS).get_json()
    assert report["sms_detail"]["delivered"] == 2 and report["cost_by_currency"] == {"KES": "4.6000"}
    return {"cycle_id": cycle_id, "at_ids": at_ids, "session_id": session_id, "report": report}


def test_delete_erases_the_contact_and_every_trace_of_it(client, history, redis_client) -> None:
    assert traces_in_database(db.get_engine())  # the fixture left traces everywhere
    response = client.delete(f"/api/contacts/{PHONE}", headers=HEADERS)

    assert response.status_code == 204, response.get_data(as_text=True)
    assert response.get_data() == b""
    assert contact_json(client, PHONE).status_code == 404
    assert traces_in_database(db.get_engine()) == []
    assert traces_in_redis(redis_client) == []
    # What the business accounts for stays: the cycle's counts and what AT charged.
    report = client.get(f"/api/cycles/{history['cycle_id']}", headers=HEADERS).get_json()
    assert report == history["report"]
    # The other contact is untouched.
    kept = contact_json(client, OTHER).get_json()
    assert kept["name"] == "Otieno" and kept["last_sms_status"] == "Success" and len(kept["messages"]) == 1


def test_delete_of_an_unknown_or_bad_number(client, session) -> None:
    assert client.delete(f"/api/contacts/{PHONE}", headers=HEADERS).status_code == 404
    assert client.delete("/api/contacts/hello", headers=HEADERS).status_code == 400
    assert client.delete(f"/api/contacts/{PHONE}").status_code == 401


def test_delete_accepts_the_number_in_any_form(client, session) -> None:
    session.add(Contact(phone=PHONE, status=ContactStatus.NEW))
    session.commit()
    assert client.delete("/api/contacts/0711000051", headers=HEADERS).status_code == 204
    assert contact_json(client, PHONE).status_code == 404


def test_later_callbacks_about_the_number_are_answered_and_dropped(client, history, drain, redis_client) -> None:
    assert client.delete(f"/api/contacts/{PHONE}", headers=HEADERS).status_code == 204

    post(client, "/dlr", wire.dlr(history["at_ids"][PHONE], "Success", PHONE))  # a late report for its SMS
    post(client, "/dlr", wire.dlr(wire.new_message_id(), "Failed", PHONE, failure_reason="UserInBlacklist"))
    post(client, "/voice", wire.voice_final_answered(wire.new_session_id(), PHONE, AT_NUMBER))
    post(client, "/receiveSMS", wire.incoming_sms(PHONE, "21512", f"It is {NAME} again", "in-erase-2"))
    post(client, "/receiveSMS", wire.incoming_sms(PHONE, "21512", "START", "in-erase-3"))
    post(client, "/ussd", wire.ussd("ATUid_erase_2", PHONE, "2"))  # "get messages by SMS"
    drain()

    assert traces_in_database(db.get_engine()) == []
    assert traces_in_redis(redis_client) == []
    assert contact_json(client, PHONE).status_code == 404


@pytest.mark.parametrize(
    "stop",
    [wire.incoming_sms(PHONE, "21512", "STOP", "in-erase-stop"), wire.ussd("ATUid_erase_stop", PHONE, "4*1")],
    ids=["sms-stop", "ussd-opt-out"],
)
def test_a_stop_after_erasure_is_honoured_without_keeping_the_number(client, history, drain, stop) -> None:
    assert client.delete(f"/api/contacts/{PHONE}", headers=HEADERS).status_code == 204
    post(client, "/receiveSMS" if "from" in stop else "/ussd", stop)
    drain()
    assert traces_in_database(db.get_engine()) == []
    assert contact_json(client, PHONE).status_code == 404

    # The operator adds the number again (an old spreadsheet): the customer stays opted out.
    response = client.post("/api/contacts", json=[{"phone": PHONE, "name": NAME}], headers=HEADERS)
    assert response.status_code == 200 and response.get_json()["created"] == 1
    again = contact_json(client, PHONE).get_json()
    assert again["status"] == "opted_out" and again["opted_out_at"] is not None
    assert client.post("/communicate", json={"to": PHONE, "message": "hi"}, headers=HEADERS).status_code == 409


def test_an_opted_out_contact_stays_opted_out_when_added_again(client, session) -> None:
    opted_out_at = datetime(2026, 11, 1, 8, tzinfo=UTC)
    session.add(
        Contact(phone=PHONE, status=ContactStatus.OPTED_OUT, opted_out_at=opted_out_at, consent_at=opted_out_at)
    )
    session.commit()
    assert client.delete(f"/api/contacts/{PHONE}", headers=HEADERS).status_code == 204
    assert traces_in_database(db.get_engine()) == []

    refused = client.post("/communicate", json={"to": PHONE, "message": "hi"}, headers=HEADERS)
    assert refused.status_code == 409 and "opted_out" in refused.get_json()["error"]
    assert contact_json(client, PHONE).status_code == 404  # nothing sent, nothing kept
    client.post("/api/contacts", json=[{"phone": PHONE}], headers=HEADERS)
    again = contact_json(client, PHONE).get_json()
    assert again["status"] == "opted_out" and again["opted_out_at"] == opted_out_at.isoformat()
    cycle_id = shared_cycles.start_cycle(session, "Hello")
    plan = cycles.plan_cycle(session, cycle_id)
    session.commit()
    assert (plan["sms"], plan["voice"], plan["skipped"]) == (0, 0, {"opted_out": 1, "invalid": 0})


def test_a_number_added_again_without_an_opt_out_is_a_contact_like_any_other(client, history, drain) -> None:
    assert client.delete(f"/api/contacts/{PHONE}", headers=HEADERS).status_code == 204
    client.post("/api/contacts", json=[{"phone": PHONE}], headers=HEADERS)
    assert contact_json(client, PHONE).get_json()["status"] == "new"
    post(client, "/receiveSMS", wire.incoming_sms(PHONE, "21512", "STOP", "in-erase-back"))
    drain()  # its callbacks count again
    assert contact_json(client, PHONE).get_json()["status"] == "opted_out"


def test_pending_work_for_the_contact_is_cancelled(client, session) -> None:
    session.add(Contact(phone=PHONE, name=NAME, status=ContactStatus.NEW))
    session.commit()
    cycle_id = shared_cycles.start_cycle(session, "Hello")
    cycles.plan_cycle(session, cycle_id)
    session.commit()
    assert client.delete(f"/api/contacts/{PHONE}", headers=HEADERS).status_code == 204
    item = session.scalars(select(CycleItem).where(CycleItem.cycle_id == cycle_id)).one()
    session.refresh(item)
    assert (item.state, item.contact_id) == (ItemState.CANCELLED, None)
    assert cycles.claim_sms(session.get(Cycle, cycle_id), 10) == []


# -- erasure and planning at the same time (planning locks the contacts it reads: worker/cycles/planning.py) --


def lock_waits(session: Session) -> int:
    """Sessions of this database waiting for a lock, read afresh (a transaction sees one snapshot of the view)."""
    waiting = "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND datname = current_database()"
    with session.get_bind().connect() as connection:
        return connection.scalar(text(waiting))


def two_contacts_and_a_cycle(session: Session) -> int:
    session.add_all(
        [Contact(phone=PHONE, name=NAME, status=ContactStatus.NEW), Contact(phone=OTHER, status=ContactStatus.NEW)]
    )
    cycle_id = shared_cycles.start_cycle(session, "Hello")
    session.commit()
    return cycle_id


def items_by_phone(session: Session, cycle_id: int) -> dict[str | None, ItemState]:
    session.expire_all()
    rows = session.execute(
        select(Contact.phone, CycleItem.state)
        .outerjoin(Contact, Contact.id == CycleItem.contact_id)
        .where(CycleItem.cycle_id == cycle_id)
    )
    return {phone: state for phone, state in rows}


# -- the embedded SQLite database ---------------------------------------------------------------------------


def test_erasure_and_dropping_on_both_databases(dialect_engine: Engine) -> None:
    from shared.erasure import erase_contact

    store = SqlStore(dialect_engine)
    session_id = wire.new_session_id()
    with Session(dialect_engine) as session:
        contact = Contact(phone=PHONE, name=NAME, status=ContactStatus.ACTIVE, tags=["vip"])
        session.add(contact)
        session.flush()
        cycle = Cycle(message="Hello", state=CycleState.DONE)
        session.add(cycle)
        session.flush()
        session.add(
            Message(contact_id=contact.id, cycle_id=cycle.id, phone=PHONE, text=f"Hi {NAME}", send_state="sent")
        )
        session.add(Call(contact_id=contact.id, phone=PHONE, message=f"Hi {NAME}", session_id=session_id))
        items = [
            InboxItem.from_json(encode("sms", wire.incoming_sms(PHONE, "21512", f"{NAME} here", "in-sq-1"))[1]),
            InboxItem.from_json(encode("ussd", wire.ussd("ATUid_sq", "254711000051", "1"))[1]),
        ]
        ingest.apply_batch(session, items)
        session.commit()
    store.remember_script(f"Hi {NAME}", phone=PHONE, session_id=session_id)
    assert traces_in_database(dialect_engine)

    with Session(dialect_engine) as session, session.begin():
        assert erase_contact(session, store, PHONE) is True
    with Session(dialect_engine) as session, session.begin():
        assert erase_contact(session, store, PHONE) is False  # gone already
        later = [
            InboxItem.from_json(encode("dlr", wire.dlr(wire.new_message_id(), "Success", PHONE))[1]),
            InboxItem.from_json(encode("sms", wire.incoming_sms(PHONE, "21512", "STOP", "in-sq-2"))[1]),
        ]
        ingest.apply_batch(session, later)
    assert traces_in_database(dialect_engine) == []
    with dialect_engine.connect() as connection:
        assert connection.execute(text("SELECT count(*) FROM messages")).scalar_one() == 1  # kept, anonymised
