"""`fallback: "same_cycle"` rule by rule, in-process (the end-to-end runs are test_same_cycle_fallback.py):
the item's state machine holds under duplicate and late reports, repeated housekeeping and a cancel; the CLI
and schedules carry the mode."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FuturesTimeout
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import redis as redis_lib
from click.testing import CliRunner
from sqlalchemy import func, select

from reach_cli.main import cli
from shared import cycle_control, schedules
from shared.db import session_scope
from shared.models import (
    Channel,
    Contact,
    ContactStatus,
    Cycle,
    CycleItem,
    CycleState,
    DlrEvent,
    Fallback,
    ItemState,
    Message,
)
from worker import fallback
from worker.cycles import finish_if_done
from worker.ingest import apply_pending_dlrs

PHONE = "+254714000001"


def waiting_item(session: Any, *, due_in: float = 900, status: ContactStatus = ContactStatus.PENDING) -> CycleItem:
    """A dispatching same-cycle cycle with one SMS item that AT accepted, waiting for its report."""
    contact = Contact(phone=PHONE, status=status)
    cycle = Cycle(message="hi", state=CycleState.DISPATCHING, fallback=Fallback.SAME_CYCLE)
    session.add_all([contact, cycle])
    session.flush()
    item = CycleItem(cycle_id=cycle.id, contact_id=contact.id, channel=Channel.SMS, state=ItemState.SENT, attempts=1)
    session.add(item)
    session.flush()
    message = Message(
        contact_id=contact.id, cycle_id=cycle.id, cycle_item_id=item.id, phone=PHONE, text="hi",
        send_state="sent", at_message_id="ATXid_fb1",
    )  # fmt: skip
    session.add(message)
    session.flush()
    item.message_id, contact.last_message_id = message.id, message.id
    item.fallback_at = datetime.now(UTC) + timedelta(seconds=due_in)
    session.commit()
    return item


def report(status: str, reason: str | None = None, at_id: str = "ATXid_fb1") -> None:
    """A delivery report stored and applied as the drain does (a duplicate is the same row again)."""
    with session_scope() as session:
        session.add(DlrEvent(at_message_id=at_id, status=status, failure_reason=reason, received_at=datetime.now(UTC)))
        session.flush()
        apply_pending_dlrs(session, [at_id])


def item_of(session: Any, item_id: int) -> CycleItem:
    session.expire_all()
    return session.get_one(CycleItem, item_id)


@pytest.fixture
def nudges(task_lists: redis_lib.Redis) -> redis_lib.Redis:
    """The broker's lists, where a fallback call made due nudges its cycle's call dispatcher."""
    return task_lists


def test_a_failure_report_makes_one_due_call_however_often_it_comes(session: Any, nudges: Any) -> None:
    item = waiting_item(session)
    report("Failed", "UserIsInactive")
    after = item_of(session, item.id)
    assert (after.channel, after.state, after.attempts) == (Channel.VOICE, ItemState.PENDING, 0)
    assert after.fallback_at is not None and after.message_id is not None
    assert nudges.llen("send") == 1  # the call dispatcher (its queue is `send`), once the transaction committed
    # The same failure again, another failure, housekeeping: nothing left to move.
    report("Rejected")
    with session_scope() as s:
        assert fallback.start_due_calls(s) == 0
    again = item_of(session, item.id)
    assert (again.channel, again.state, again.updated_at) == (Channel.VOICE, ItemState.PENDING, after.updated_at)
    assert session.scalar(select(func.count()).select_from(CycleItem)) == 1  # one item per contact and cycle


def test_two_transactions_racing_make_one_call(session: Any, nudges: Any) -> None:
    """Two drains applying the same failure (or housekeeping beside a drain, or a restarted worker's): the
    second waits for the first's row lock, then finds the item moved already."""
    item = waiting_item(session)
    failed_now = CycleItem.id == item.id
    with ThreadPoolExecutor(1) as pool:
        with session_scope() as first:
            assert fallback.start_calls(first, failed_now) == 1
            second = pool.submit(_start_calls_in_own_transaction, failed_now)
            with pytest.raises(FuturesTimeout):
                second.result(timeout=1)  # blocked on the first's row lock until it commits
        assert second.result(timeout=10) == 0
    assert item_of(session, item.id).channel is Channel.VOICE


def _start_calls_in_own_transaction(which: Any) -> int:
    with session_scope() as s:
        return fallback.start_calls(s, which)


def test_housekeeping_calls_once_the_time_has_passed(session: Any, nudges: Any) -> None:
    item = waiting_item(session, due_in=-1)
    report("Buffered")  # in transit: nothing changes
    assert item_of(session, item.id).channel is Channel.SMS
    with session_scope() as s:
        assert not finish_if_done(s, item.cycle_id)  # not done while a fallback call is to come
    with session_scope() as s:
        assert fallback.start_due_calls(s) == 1
    with session_scope() as s:
        assert fallback.start_due_calls(s) == 0
    assert item_of(session, item.id).state is ItemState.PENDING


def test_a_success_stops_the_wait_and_cancels_a_due_call_not_yet_placed(session: Any, nudges: Any) -> None:
    item = waiting_item(session)
    report("Success")
    after = item_of(session, item.id)
    assert (after.channel, after.state, after.fallback_at) == (Channel.SMS, ItemState.SENT, None)
    with session_scope() as s:
        assert finish_if_done(s, item.cycle_id)


def test_a_late_success_cancels_the_call_before_it_is_placed(session: Any, nudges: Any) -> None:
    item = waiting_item(session, due_in=-1)
    with session_scope() as s:
        fallback.start_due_calls(s)
    report("Success")
    after = item_of(session, item.id)
    assert (after.channel, after.state, after.error) == (Channel.VOICE, ItemState.CANCELLED, fallback.DELIVERED_FIRST)


def test_a_contact_that_opted_out_is_not_called(session: Any, nudges: Any) -> None:
    item = waiting_item(session, due_in=-1, status=ContactStatus.OPTED_OUT)
    with session_scope() as s:
        assert fallback.start_due_calls(s) == 0
    after = item_of(session, item.id)
    assert (after.channel, after.state, after.fallback_at) == (Channel.SMS, ItemState.SENT, None)
    assert after.error == fallback.UNREACHABLE_NOW


def test_a_cancelled_cycle_calls_nobody(session: Any, nudges: Any) -> None:
    item = waiting_item(session)
    with session_scope() as s:
        cycle_control.cancel(s, item.cycle_id)
    report("Failed")
    after = item_of(session, item.id)
    assert (after.channel, after.state, after.fallback_at) == (Channel.SMS, ItemState.SENT, None)


def test_a_next_cycle_cycle_never_waits(session: Any) -> None:
    item = waiting_item(session)
    with session_scope() as s:
        s.get_one(Cycle, item.cycle_id).fallback = Fallback.NEXT_CYCLE
        s.get_one(CycleItem, item.id).fallback_at = None
    with session_scope() as s:
        assert fallback.await_reports(s, [item.id]) == 0
    with session_scope() as s:
        cycle = s.get_one(Cycle, item.cycle_id)
        cycle.fallback = Fallback.SAME_CYCLE
    with session_scope() as s:
        assert fallback.await_reports(s, [item.id]) == 1


# -- the CLI and schedules ------------------------------------------------------------------------------------


def test_cycle_run_takes_the_fallback(session: Any, task_lists: redis_lib.Redis) -> None:
    result = CliRunner().invoke(cli, ["cycle", "run", "--message", "hi", "--fallback", "same_cycle", "--json"])
    assert result.exit_code == 0, result.output
    assert session.scalars(select(Cycle.fallback)).one() is Fallback.SAME_CYCLE
    bad = CliRunner().invoke(cli, ["cycle", "run", "--message", "hi", "--fallback", "soon"])
    assert bad.exit_code == 2 and "--fallback" in bad.output


def test_a_schedule_starts_cycles_with_its_fallback(session: Any) -> None:
    schedule = schedules.add_schedule(session, "every minute", "* * * * *", "hi", fallback="same_cycle")
    schedule.created_at = datetime.now(UTC) - timedelta(minutes=5)  # this minute's period is due
    session.commit()
    assert schedules.schedule_json(session, schedule)["fallback"] == "same_cycle"
    cycle_id = schedules.start_due_period(session, schedule, datetime.now(UTC))
    session.commit()
    assert session.get_one(Cycle, cycle_id).fallback is Fallback.SAME_CYCLE


def test_the_schedule_api_names_a_bad_fallback(client: Any, operator_headers: dict[str, str]) -> None:
    body = {"name": "daily", "cron": "0 9 * * *", "message": "hi", "fallback": "later"}
    response = client.post("/api/schedules", json=body, headers=operator_headers)
    assert response.status_code == 400 and "fallback" in response.get_json()["error"]
