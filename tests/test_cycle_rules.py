"""The cycle's rules, function by function, against the real database (no worker process): routing,
claiming, retries of busy calls, cancellations, schedules."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select, update

from shared import cycles as shared_cycles
from shared import schedules
from shared.callbacks import Dlr
from shared.models import Call, Channel, Contact, ContactStatus, Cycle, CycleItem, ItemState, Message, Schedule
from shared.settings import load_settings
from shared.status_policy import Action

# `tasks`, not `tasks.tick`: pytest's collection evaluates a task proxy held as a module attribute, which
# loads the Celery configuration before the session's REDIS_URL is set (and loses it for the session).
from worker import cycles, fallback, ingest, tasks

A, B = "+254711000001", "+254711000002"


def state_of(session, cycle_id: int) -> str:
    session.expire_all()
    return session.get(Cycle, cycle_id).state.value


def test_two_beats_at_once_start_one_cycle_per_period(session) -> None:
    # Hourly: the period due now is less than SCHEDULE_MISFIRE_SECONDS old, so the tick starts it.
    schedule = schedules.add_schedule(session, "hourly", "0 * * * *", "News", timezone="Africa/Nairobi")
    schedule.created_at = datetime.now(UTC) - timedelta(days=3)
    session.commit()
    first, second = tasks.tick.run(), tasks.tick.run()  # two beats, or one tick delivered twice
    assert len(first) == 1 and second == []
    assert session.scalar(select(func.count()).select_from(Cycle)) == 1


@pytest.fixture
def planned(session):
    """A cycle planned over one contact of each status."""
    phones = {}
    for i, status in enumerate(ContactStatus):
        contact = Contact(phone=f"+2547220000{i:02d}", status=status)
        session.add(contact)
        phones[status] = contact
    session.flush()
    cycle_id = shared_cycles.start_cycle(session, "hello", "hello by voice")
    plan = cycles.plan_cycle(session, cycle_id)
    session.commit()
    return cycle_id, plan, phones


def test_planning_routes_each_status(session, planned) -> None:
    cycle_id, plan, phones = planned
    assert plan == {
        "sms": 2,
        "voice": 2,
        "skipped": {"opted_out": 1, "invalid": 1},
        # What the cycle's estimate reads back (shared/cycle_money.py): contacts and parts by country prefix.
        "sms_by_prefix": {"+254": 2},
        "sms_parts_by_prefix": {"+254": 2},
        "segments": {"encoding": "GSM-7", "parts": 1},
    }
    routes = {
        contact_id: channel
        for contact_id, channel in session.execute(
            select(CycleItem.contact_id, CycleItem.channel).where(CycleItem.cycle_id == cycle_id)
        )
    }
    assert routes == {
        phones[ContactStatus.NEW].id: Channel.SMS,
        phones[ContactStatus.ACTIVE].id: Channel.SMS,
        phones[ContactStatus.INACTIVE].id: Channel.VOICE,
        phones[ContactStatus.PENDING].id: Channel.VOICE,
    }
    assert state_of(session, cycle_id) == "dispatching"
    assert cycles.plan_cycle(session, cycle_id) is None  # planning twice does nothing


def test_customer_preference_overrides_routing(session) -> None:
    session.add_all(
        [
            Contact(phone=A, status=ContactStatus.ACTIVE, channel_preference=Channel.VOICE),
            Contact(phone=B, status=ContactStatus.INACTIVE, channel_preference=Channel.SMS),
        ]
    )
    session.flush()
    cycle_id = shared_cycles.start_cycle(session, "hi")
    cycles.plan_cycle(session, cycle_id)
    planned = select(Contact.phone, CycleItem.channel).join(CycleItem, CycleItem.contact_id == Contact.id)
    rows = dict(session.execute(planned).all())
    assert rows == {A: Channel.VOICE, B: Channel.SMS}


def test_items_are_claimed_once(session, planned) -> None:
    cycle_id, _, _ = planned
    first = cycles.claim(session, cycle_id, Channel.SMS, 10)
    second = cycles.claim(session, cycle_id, Channel.SMS, 10)
    assert len(first) == 2 and second == []


def earlier_message(session, contact: Contact, digit: str) -> Message:
    """An SMS sent to `contact` before the cycle, its last message: what a late report is about."""
    message = Message(contact_id=contact.id, phone=contact.phone, text="earlier", at_message_id="ATXid_" + digit * 32)
    session.add(message)
    session.flush()
    contact.last_message_id = message.id
    session.commit()
    return message


def test_late_success_cancels_the_fallback_call(session, planned) -> None:
    _, _, phones = planned
    pending = phones[ContactStatus.PENDING]
    message = earlier_message(session, pending, "9")
    ingest.apply_dlrs(
        session, [(datetime.now(UTC), Dlr(id=message.at_message_id, status="Success", phone_number=pending.phone))]
    )
    session.commit()
    item = session.scalars(select(CycleItem).where(CycleItem.contact_id == pending.id)).one()
    assert item.state is ItemState.CANCELLED and "delivered" in item.error
    other = session.scalars(select(CycleItem).where(CycleItem.contact_id == phones[ContactStatus.INACTIVE].id)).one()
    assert other.state is ItemState.PENDING


def test_a_report_that_the_customer_blacklisted_us_cancels_their_pending_items(session, planned) -> None:
    _, _, phones = planned
    pending = phones[ContactStatus.PENDING]
    message = earlier_message(session, pending, "8")
    report = Dlr(
        id=message.at_message_id, status="Failed", phone_number=pending.phone, failure_reason="UserInBlackList"
    )
    ingest.apply_dlrs(session, [(datetime.now(UTC), report)])
    session.commit()
    item = session.scalars(select(CycleItem).where(CycleItem.contact_id == pending.id)).one()
    assert (item.state, item.error) == (ItemState.CANCELLED, "the contact can no longer be reached")
    other = session.scalars(select(CycleItem).where(CycleItem.contact_id == phones[ContactStatus.INACTIVE].id)).one()
    assert other.state is ItemState.PENDING


@pytest.mark.parametrize(
    ("outcome", "retries", "attempts", "expected"),
    [
        ("retry_later", 2, 1, ItemState.PENDING),  # busy: called again later
        ("retry_later", 2, 3, ItemState.DONE),  # out of retries
        ("retry_later", 0, 1, ItemState.DONE),
        ("answered", 2, 1, ItemState.DONE),
        ("unreached", 2, 1, ItemState.DONE),
        ("invalid", 2, 1, ItemState.DONE),
    ],
)
def test_call_outcome_decides_a_retry(session, planned, monkeypatch, outcome, retries, attempts, expected) -> None:
    from shared import settings as settings_module

    cycle_id, _, phones = planned
    contact = phones[ContactStatus.INACTIVE]
    item = session.scalars(select(CycleItem).where(CycleItem.contact_id == contact.id)).one()
    call = Call(contact_id=contact.id, cycle_id=cycle_id, cycle_item_id=item.id, phone=contact.phone, send_state="sent")
    session.add(call)
    session.flush()
    item.call_id, item.attempts, item.state = call.id, attempts, ItemState.SENT
    monkeypatch.setattr(
        settings_module, "get_settings", lambda: load_settings(call_retries=retries, call_retry_delay_seconds=60)
    )
    monkeypatch.setattr(
        fallback, "get_settings", lambda: load_settings(call_retries=retries, call_retry_delay_seconds=60)
    )
    fallback.after_call_ended(session, call, Action(outcome))
    session.flush()
    assert item.state is expected
    if expected is ItemState.PENDING:
        assert item.call_id is None and item.next_attempt_at > datetime.now(UTC) + timedelta(seconds=50)


def test_opt_out_cancels_pending_items(session, planned) -> None:
    _, _, phones = planned
    ingest.opt_out(session, phones[ContactStatus.NEW].phone, datetime.now(UTC))
    session.commit()
    item = session.scalars(select(CycleItem).where(CycleItem.contact_id == phones[ContactStatus.NEW].id)).one()
    assert item.state is ItemState.CANCELLED


def test_a_stop_while_the_cycle_plans_is_never_sent(session) -> None:
    """A STOP applied while a cycle's plan is still open: the STOP's update does not wait for the plan (it takes
    no lock the plan's FOR KEY SHARE holds off), so its cancellation cannot see the item the plan is writing.
    The item must still never be sent: the claim looks at the contact as it is when it sends."""
    import threading

    from sqlalchemy.orm import Session

    from worker.cycles import items as cycle_items

    session.add_all([Contact(phone=A, status=ContactStatus.NEW), Contact(phone=B, status=ContactStatus.NEW)])
    cycle_id = shared_cycles.start_cycle(session, "hello")
    session.commit()
    stopped = threading.Event()

    def stop() -> None:
        with Session(bind=session.get_bind()) as customer, customer.begin():
            ingest.opt_out(customer, A, datetime.now(UTC))
        stopped.set()

    with Session(bind=session.get_bind()) as planner:
        assert cycles.plan_cycle(planner, cycle_id)["sms"] == 2  # planned, not committed
        stopping = threading.Thread(target=stop)
        stopping.start()
        stopped.wait(5)  # it does not wait for the plan; if it ever did, it would cancel the item after it
        planner.commit()
    stopping.join(10)

    claimed = [phone for _item, _contact, phone in cycle_items.claim(session, cycle_id, Channel.SMS, 10)]
    session.commit()
    assert claimed == [B]
    item = session.scalars(
        select(CycleItem).join(Contact, Contact.id == CycleItem.contact_id).where(Contact.phone == A)
    ).one()
    assert (item.state, item.error) == (ItemState.CANCELLED, cycle_items.LEFT_BEFORE_SENDING)


def test_an_operator_cancel_while_a_dispatcher_claims_waits_for_the_claim_not_a_deadlock(session) -> None:
    """A dispatcher has locked its batch and is writing the batch's messages (each names the cycle: a foreign
    key, so a KEY SHARE on the cycle row) when the operator cancels (the cycle row FOR UPDATE, then every
    pending item). Each must wait for the other in one order: before, the cancel held the cycle and waited for
    the batch while the claim held the batch and waited for the cycle, and Postgres killed one (the API
    answered 500)."""
    import threading

    from sqlalchemy.orm import Session

    from shared import cycle_control
    from tests.conftest import wait_for
    from tests.test_erasure import lock_waits
    from worker.cycles import items as cycle_items
    from worker.cycles import sms as cycle_sms

    session.add_all([Contact(phone=A, status=ContactStatus.NEW), Contact(phone=B, status=ContactStatus.NEW)])
    cycle_id = shared_cycles.start_cycle(session, "hello")
    session.commit()
    cycles.plan_cycle(session, cycle_id)
    session.commit()
    cycle = session.get_one(Cycle, cycle_id)
    errors: list[BaseException] = []

    def cancel() -> None:
        try:
            with Session(bind=session.get_bind()) as operator, operator.begin():
                cycle_control.cancel(operator, cycle_id)
        except BaseException as exc:  # reported below
            errors.append(exc)

    canceller = threading.Thread(target=cancel)
    with Session(bind=session.get_bind()) as dispatcher:
        ids = cycle_items.lock_due(dispatcher, cycle_id, Channel.SMS, 1)
        canceller.start()
        wait_for(lambda: lock_waits(session), timeout=10, what="the cancel waiting")
        claimed = cycle_sms._write_same_text(dispatcher, cycle, ids, datetime.now(UTC))
        lease = cycle_items.claimed_values(timedelta(seconds=30))
        dispatcher.execute(update(CycleItem).where(CycleItem.id.in_(ids)).values(**lease))  # as claim_sms does
        dispatcher.commit()
    canceller.join(10)

    assert errors == [] and len(claimed) == 1
    assert state_of(session, cycle_id) == "cancelled"
    states = dict(session.execute(select(CycleItem.id, CycleItem.state).where(CycleItem.cycle_id == cycle_id)).all())
    assert sorted(states.values()) == [ItemState.CANCELLED, ItemState.SUBMITTING]  # the claimed one goes on


def test_cycle_message_is_validated(session) -> None:
    with pytest.raises(shared_cycles.CycleError, match="must not be empty"):
        shared_cycles.start_cycle(session, "   ")
    with pytest.raises(shared_cycles.CycleError, match="too long"):
        shared_cycles.start_cycle(session, "x" * 2000)


@pytest.mark.parametrize(
    ("cron", "tz", "error"),
    [("every day", "UTC", "bad cron"), ("61 * * * *", "UTC", "bad cron"), ("0 9 * * *", "Mars/Base", "time zone")],
)
def test_bad_schedules_are_refused(session, cron, tz, error) -> None:
    with pytest.raises(shared_cycles.CycleError, match=error):
        schedules.add_schedule(session, "x", cron, "hi", timezone=tz)


def test_schedule_period_in_its_time_zone(session) -> None:
    schedule = Schedule(id=7, name="x", cron="0 9 * * *", timezone="Africa/Nairobi", message="m")
    schedule.created_at = datetime(2026, 1, 1, tzinfo=UTC)
    due = schedules.due_period(schedule, datetime(2026, 11, 28, 7, 30, tzinfo=UTC))  # 10:30 in Nairobi
    assert due == datetime(2026, 11, 28, 6, 0, tzinfo=UTC)  # 09:00 in Nairobi
    assert schedules.period_key(schedule, due) == "schedule:7:2026-11-28T06:00Z"


def test_calls_in_flight_are_capped(session, planned) -> None:
    cycle_id, _, phones = planned
    cycle = session.get(Cycle, cycle_id)
    session.expunge(cycle)
    busy = phones[ContactStatus.ACTIVE]
    session.add(Call(contact_id=busy.id, phone=busy.phone, send_state="sent"))  # ringing, not ended
    session.commit()
    assert cycles.claim_calls(cycle, load_settings(max_calls_in_flight=1)) == []  # no room
    taken = cycles.claim_calls(cycle, load_settings(max_calls_in_flight=2))
    assert len(taken) == 1  # room for one more, though two are due
    assert len(cycles.claim_calls(cycle, load_settings(max_calls_in_flight=10))) == 1  # the other one
