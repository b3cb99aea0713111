"""An erasure (`DELETE /api/contacts/<phone>`) racing the work that writes about the same contact: a plan, a
dispatcher claiming its cycle item, a drain applying its delivery reports. Each must wait for the other in one order; in
the opposite orders Postgres kills one of them (`deadlock detected`), and the API answers 500 or the batch
fails. Real Postgres, two sessions, the second in a thread; the interleaving is forced by holding the first
transaction open until Postgres shows the second waiting."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from shared.erasure import ERASED, erase_contact
from shared.inbox import InboxItem, encode
from shared.models import Channel, Contact, ContactStatus, Cycle, CycleItem, CycleState, ItemState, Message
from shared.store import get_store
from simulator import wire
from tests.conftest import wait_for
from tests.test_erasure import OTHER, PHONE, items_by_phone, lock_waits, two_contacts_and_a_cycle
from worker import cycles, ingest
from worker.cycles import items as cycle_items
from worker.cycles import sms as cycle_sms


def erasing_in_a_thread(session: Session) -> tuple[threading.Thread, list[bool], list[BaseException]]:
    erased: list[bool] = []
    errors: list[BaseException] = []

    def erase() -> None:
        try:
            with Session(bind=session.get_bind()) as eraser, eraser.begin():
                erased.append(erase_contact(eraser, get_store(), PHONE))
        except BaseException as exc:  # reported by the test
            errors.append(exc)

    return threading.Thread(target=erase), erased, errors


def planning_in_a_thread(session: Session, cycle_id: int) -> tuple[threading.Thread, list[Any]]:
    planned: list[Any] = []

    def plan() -> None:
        with Session(bind=session.get_bind()) as planner, planner.begin():
            planned.append(cycles.plan_cycle(planner, cycle_id))

    return threading.Thread(target=plan), planned


def while_the_other_waits(
    session: Session,
    first: Callable[[Session], object],
    other: threading.Thread,
    then: Callable[[Session], object] | None = None,
) -> None:
    """`first` in a transaction, `other` started and seen waiting for it (a lock wait in Postgres), `then` in the
    same transaction, commit; `other` finished."""
    with Session(bind=session.get_bind()) as holder:
        first(holder)
        other.start()
        try:
            wait_for(lambda: lock_waits(session), timeout=10, what="the other transaction waiting")
            if then is not None:
                then(holder)
        finally:
            holder.commit()
    other.join(15)


def while_the_erasure_waits(session: Session, first: Callable[[Session], None], then: Callable[[Session], None]):
    """`first`, the erasure waiting for it, `then`, commit: the erasure's outcome."""
    erasing, erased, errors = erasing_in_a_thread(session)
    while_the_other_waits(session, first, erasing, then)
    return erased, errors


def test_an_erasure_while_a_dispatcher_claims_waits_for_the_claim_not_a_deadlock(session) -> None:
    """The dispatcher has locked its batch and writes its messages (each names the contact: a foreign key, so a
    KEY SHARE on the contact). Before, the erasure held the contact FOR UPDATE and waited for the batch's items
    while the claim held them and waited for the contact."""
    cycle_id = two_contacts_and_a_cycle(session)
    cycles.plan_cycle(session, cycle_id)
    session.commit()
    cycle = session.get_one(Cycle, cycle_id)
    claimed = []

    def lock_batch(worker: Session) -> None:
        claimed.extend(cycle_items.lock_due(worker, cycle_id, Channel.SMS, 2))

    def write_messages(worker: Session) -> None:
        cycle_sms._write_same_text(worker, cycle, claimed, datetime.now(UTC))
        lease = cycle_items.claimed_values(timedelta(seconds=30))
        worker.execute(update(CycleItem).where(CycleItem.id.in_(claimed)).values(**lease))  # as claim_sms does

    erased, errors = while_the_erasure_waits(session, lock_batch, write_messages)

    assert (errors, erased) == ([], [True])
    assert session.scalar(select(Contact.id).where(Contact.phone == PHONE)) is None
    phones = session.scalars(select(Message.phone).where(Message.cycle_id == cycle_id).order_by(Message.phone))
    assert sorted(phones) == [OTHER, ERASED]  # sent before the erasure: kept, anonymised


def test_an_erasure_while_a_drain_applies_its_reports_waits_for_the_drain_not_a_deadlock(session) -> None:
    """A batch moves the messages its reports are about (their rows locked), then the contacts that follow them.
    Before, an erasure between the two statements held the contact FOR UPDATE and waited for the messages while
    the drain held them and waited for the contact. Here the batch's two statements are two batches in one
    transaction: a report about an older message (the contact does not follow it), then about the last one."""
    contact = Contact(phone=PHONE, status=ContactStatus.ACTIVE)
    session.add(contact)
    session.flush()
    sent = Cycle(message="Hello", state=CycleState.DONE)
    session.add(sent)
    session.flush()
    older, last = (
        Message(contact_id=contact.id, cycle_id=sent.id, phone=PHONE, text="Hi", send_state="sent", at_message_id=at_id)
        for at_id in ("ATXid_race_1", "ATXid_race_2")
    )
    session.add_all([older, last])
    session.flush()
    contact.last_message_id = last.id
    session.commit()

    def report(at_id: str) -> Callable[[Session], None]:
        item = InboxItem.from_json(encode("dlr", wire.dlr(at_id, "Success", PHONE))[1])
        return lambda worker: ingest.apply_batch(worker, [item]) and None

    erased, errors = while_the_erasure_waits(session, report("ATXid_race_1"), report("ATXid_race_2"))

    assert (errors, erased) == ([], [True])
    statuses = session.execute(select(Message.phone, Message.status).where(Message.cycle_id == sent.id)).all()
    assert sorted(statuses) == [(ERASED, "Success"), (ERASED, "Success")]
    assert session.scalars(select(CycleItem).where(CycleItem.state == ItemState.PENDING)).all() == []


def test_an_erasure_that_keeps_giving_way_answers_503_and_erases_nothing(client, session, monkeypatch) -> None:
    """Work that keeps holding the contact's rows (here: a cycle item locked and never let go) makes the
    erasure give way until its patience ends: a 503 saying to try again, the contact untouched."""
    from shared import erasure
    from tests.test_erasure import HEADERS

    monkeypatch.setattr(erasure, "ERASURE_PATIENCE_SECONDS", 1)
    cycle_id = two_contacts_and_a_cycle(session)
    cycles.plan_cycle(session, cycle_id)
    session.commit()
    with Session(bind=session.get_bind()) as dispatcher:
        assert len(cycle_items.lock_due(dispatcher, cycle_id, Channel.SMS, 2)) == 2
        response = client.delete(f"/api/contacts/{PHONE}", headers=HEADERS)
        dispatcher.rollback()

    assert response.status_code == 503
    assert "try again" in response.get_json()["error"]
    assert session.scalar(select(Contact.id).where(Contact.phone == PHONE)) is not None
    assert client.delete(f"/api/contacts/{PHONE}", headers=HEADERS).status_code == 204


def test_a_contact_being_erased_while_a_cycle_plans_is_left_out_of_the_plan(session) -> None:
    """The plan reaches the contact while its erasure holds it: the plan waits for the erasure, then leaves
    the erased contact out (never an item pointing at a contact that is gone, never a failed plan)."""
    cycle_id = two_contacts_and_a_cycle(session)
    planning, planned = planning_in_a_thread(session, cycle_id)
    erased = []  # not committed while the plan starts: the erasure holds it off
    while_the_other_waits(session, lambda eraser: erased.append(erase_contact(eraser, get_store(), PHONE)), planning)

    assert erased == [True] and [plan["sms"] for plan in planned] == [1]
    assert items_by_phone(session, cycle_id) == {OTHER: ItemState.PENDING}


def test_an_erasure_while_a_cycle_plans_waits_for_the_plan_then_cancels_the_new_item(session) -> None:
    cycle_id = two_contacts_and_a_cycle(session)
    erasing, erased, errors = erasing_in_a_thread(session)
    while_the_other_waits(session, lambda planner: cycles.plan_cycle(planner, cycle_id), erasing)  # then committed

    assert (errors, erased) == ([], [True])
    assert items_by_phone(session, cycle_id) == {None: ItemState.CANCELLED, OTHER: ItemState.PENDING}


def test_a_contact_locked_by_an_edit_does_not_hold_up_a_plan(session) -> None:
    """An operator's edit locks the contact (FOR UPDATE) while it applies: a plan meanwhile goes on (it locked
    every contact it read, so a million-contact plan waited for any one of them), and an erasure that follows
    cancels the plan's item."""
    cycle_id = two_contacts_and_a_cycle(session)
    planning, planned = planning_in_a_thread(session, cycle_id)
    with Session(bind=session.get_bind()) as eraser:
        eraser.scalars(select(Contact).where(Contact.phone == PHONE).with_for_update()).one()  # as an edit does
        planning.start()
        try:
            planning.join(10)
            assert [plan["sms"] for plan in planned] == [2], "the plan waited for the locked contact"
        finally:
            eraser.rollback()
            planning.join(10)
        assert erase_contact(eraser, get_store(), PHONE) is True
        eraser.commit()

    assert items_by_phone(session, cycle_id) == {None: ItemState.CANCELLED, OTHER: ItemState.PENDING}
