"""Cancel, pause and resume a cycle (design §4): the operator API through the Flask test client, and the
dispatchers' side in-process against the real Postgres and Redis and the AT simulator (no worker process;
tests/test_cycle_control_live.py runs the same story through a real worker)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import event, func, insert, select, text, update

from shared import cycles as shared_cycles
from shared.models import (
    Call,
    Contact,
    ContactStatus,
    Cycle,
    CycleItem,
    CycleState,
    ItemState,
    Message,
)
from shared.settings import get_settings, load_settings
from shared.status_policy import Action
from shared.store import get_store
from simulator.scenario import Scenario
from tests.conftest import API_TOKEN, wait_for
from worker import cycles, fallback

AUTH = {"Authorization": f"Bearer {API_TOKEN}"}
ACTIONS = ("cancel", "pause", "resume")


def phones(n: int, prefix: str = "+2547112") -> list[str]:
    return [f"{prefix}{i:05d}" for i in range(n)]


def new_cycle(session: Any, n: int, status: ContactStatus = ContactStatus.NEW, *, plan: bool = True) -> int:
    """`n` contacts of `status` and a cycle over them, planned (`dispatching`) unless `plan` is false."""
    session.execute(insert(Contact), [{"phone": p, "status": status} for p in phones(n)])
    cycle_id = shared_cycles.start_cycle(session, "Your bill is ready")
    if plan:
        cycles.plan_cycle(session, cycle_id)
    session.commit()
    return cycle_id


def items(session: Any, cycle_id: int) -> dict[str, int]:
    session.expire_all()
    rows = session.execute(
        select(CycleItem.state, func.count()).where(CycleItem.cycle_id == cycle_id).group_by(CycleItem.state)
    )
    return {state.value: count for state, count in rows}


def cycle_of(session: Any, cycle_id: int) -> Cycle:
    session.expire_all()
    return session.get(Cycle, cycle_id)


def lock_waits(session: Any) -> int:
    """Sessions of this database waiting for a lock, read afresh (a transaction sees one snapshot of the view)."""
    waiting = "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND datname = current_database()"
    with session.get_bind().connect() as connection:
        return connection.scalar(text(waiting))


def post(client: Any, cycle_id: int, action: str) -> Any:
    return client.post(f"/api/cycles/{cycle_id}/{action}", headers=AUTH)


def sms_numbers(simulator: Any) -> list[str]:
    """Every number AT (the simulator) was asked to text, one entry per time."""
    return [n for r in simulator.requests("/version1/messaging") for n in r["form"]["to"].split(",")]


@pytest.fixture
def at(simulator: Any, clean: None) -> Iterator[Any]:
    """The test session's simulator (what the settings point the AT client at), reset and with no hold."""
    simulator.reset()
    simulator.set_scenario(Scenario.from_dict({}))
    yield simulator
    simulator.release()


# -- the API: answers --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("action", ACTIONS)
def test_an_unknown_cycle_is_404(client: Any, session: Any, action: str) -> None:
    response = post(client, 999, action)
    assert response.status_code == 404
    assert response.json == {"error": "no cycle 999"}


@pytest.mark.parametrize("action", ACTIONS)
def test_control_needs_the_operator_token(client: Any, session: Any, action: str) -> None:
    cycle_id = new_cycle(session, 2)
    response = client.post(f"/api/cycles/{cycle_id}/{action}", headers={"Authorization": "Bearer wrong"})
    assert response.status_code == 401
    assert cycle_of(session, cycle_id).state is CycleState.DISPATCHING


@pytest.mark.parametrize(
    ("state", "action"),
    [
        (CycleState.DONE, "cancel"),
        (CycleState.CANCELLED, "cancel"),
        (CycleState.DONE, "pause"),
        (CycleState.CANCELLED, "pause"),
        (CycleState.FAILED, "pause"),
        (CycleState.DISPATCHING, "resume"),
        (CycleState.PLANNING, "resume"),
        (CycleState.DONE, "resume"),
        (CycleState.CANCELLED, "resume"),
    ],
)
def test_a_request_the_cycles_state_does_not_allow_is_409(
    client: Any, session: Any, state: CycleState, action: str
) -> None:
    cycle_id = new_cycle(session, 2)
    session.execute(update(Cycle).where(Cycle.id == cycle_id).values(state=state))
    session.commit()
    before = items(session, cycle_id)

    response = post(client, cycle_id, action)

    assert response.status_code == 409, response.json
    assert response.json["error"].startswith(f"cycle {cycle_id} is {state.value}")
    assert cycle_of(session, cycle_id).state is state
    assert items(session, cycle_id) == before


def test_cancel_answers_the_cycle_with_its_unsent_items_cancelled(client: Any, session: Any) -> None:
    other = new_cycle(session, 3)
    session.execute(insert(Contact), [{"phone": "+254711300001", "status": ContactStatus.INACTIVE}])
    cycle_id = shared_cycles.start_cycle(session, "Your bill is ready")  # the 3 new ones by SMS, one call
    cycles.plan_cycle(session, cycle_id)
    session.commit()

    response = post(client, cycle_id, "cancel")

    assert response.status_code == 200
    report = response.json
    assert report == client.get(f"/api/cycles/{cycle_id}", headers=AUTH).json  # the same JSON as GET
    assert (report["id"], report["state"], report["cancelled"]) == (cycle_id, "cancelled", 4)
    assert (report["sms"], report["voice"]) == (3, 1)  # still what was planned
    assert report["sms_detail"]["items"]["cancelled"] == 3 and report["voice_detail"]["items"]["cancelled"] == 1
    assert report["finished_at"] is not None
    assert items(session, cycle_id) == {"cancelled": 4}
    assert items(session, other) == {"pending": 3}  # another cycle is untouched


def test_pause_and_resume_answer_the_cycle_and_say_who_paused(client: Any, session: Any) -> None:
    cycle_id = new_cycle(session, 2)

    paused = post(client, cycle_id, "pause")

    assert paused.status_code == 200
    assert (paused.json["state"], paused.json["paused_by"]) == ("paused", "operator")
    assert paused.json["paused_reason"] == "paused by the operator"
    assert items(session, cycle_id) == {"pending": 2}  # held, not dropped
    assert post(client, cycle_id, "pause").status_code == 200  # asking again changes nothing

    resumed = post(client, cycle_id, "resume")

    assert resumed.status_code == 200
    assert (resumed.json["state"], resumed.json["paused_by"], resumed.json["paused_reason"]) == (
        "dispatching",
        None,
        None,
    )


def test_a_pause_for_an_account_problem_is_told_apart_and_resumed_the_same_way(client: Any, session: Any) -> None:
    cycle_id = new_cycle(session, 2)
    shared_cycles.pause(session, cycle_id, "InsufficientBalance (405): top up the account")
    session.commit()

    report = client.get(f"/api/cycles/{cycle_id}", headers=AUTH).json
    assert (report["state"], report["paused_by"]) == ("paused", "account")
    assert report["paused_reason"] == "InsufficientBalance (405): top up the account"

    response = post(client, cycle_id, "resume")
    assert response.status_code == 200 and response.json["state"] == "dispatching"


# -- planning --------------------------------------------------------------------------------------------------


def test_a_cycle_cancelled_before_planning_is_never_planned(client: Any, session: Any) -> None:
    cycle_id = new_cycle(session, 3, plan=False)

    response = post(client, cycle_id, "cancel")
    assert response.status_code == 200 and response.json["state"] == "cancelled"

    assert cycles.plan_cycle(session, cycle_id) is None  # the plan task that was already queued
    session.commit()
    assert cycle_of(session, cycle_id).state is CycleState.CANCELLED
    assert items(session, cycle_id) == {}
    assert cycles.stuck_planning(session, older_than=timedelta(0)) == []


def test_a_cancel_during_planning_waits_for_the_plan_then_cancels_it(client: Any, session: Any) -> None:
    cycle_id = new_cycle(session, 5, plan=False)
    answers: list[Any] = []
    cancelling = threading.Thread(target=lambda: answers.append(post(client, cycle_id, "cancel")))
    with type(session)(bind=session.get_bind()) as planner:
        cycles.plan_cycle(planner, cycle_id)  # planned, not committed: the cycle row stays locked
        cancelling.start()
        try:
            wait_for(lambda: lock_waits(session), timeout=10, what="the cancel waiting for the planner's lock")
        finally:
            planner.commit()  # planning ends with the cycle `dispatching`...
    cancelling.join(10)

    [response] = answers  # ...and the cancel, applied after it, stops all of it
    assert response.status_code == 200
    assert (response.json["state"], response.json["cancelled"]) == ("cancelled", 5)
    assert items(session, cycle_id) == {"cancelled": 5}


def test_a_plan_committed_during_a_completion_check_is_not_finished(session: Any) -> None:
    """Housekeeping checks every open cycle while one is being planned. Its look found no items (the plan had
    not committed), and the plan commits before it writes: the cycle, now `dispatching` with every item
    pending, must not be called done (it then never sent anything: dispatchers stop at a finished cycle)."""
    cycle_id = new_cycle(session, 3, status=ContactStatus.INACTIVE, plan=False)
    planner = type(session)(bind=session.get_bind())
    cycles.plan_cycle(planner, cycle_id)  # planned, not committed yet

    def commit_the_plan_first(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if statement.lstrip().upper().startswith("UPDATE CYCLES") and planner.in_transaction():
            planner.commit()

    with type(session)(bind=session.get_bind()) as checker:
        event.listen(checker.connection(), "before_cursor_execute", commit_the_plan_first)
        finished = cycles.finish_if_done(checker, cycle_id)
        checker.commit()
    planner.close()

    assert not finished
    assert cycle_of(session, cycle_id).state is CycleState.DISPATCHING
    assert items(session, cycle_id) == {"pending": 3}


def test_a_cycle_paused_while_planning_is_planned_and_stays_paused(client: Any, session: Any) -> None:
    cycle_id = new_cycle(session, 3, plan=False)
    assert post(client, cycle_id, "pause").status_code == 200

    plan = cycles.plan_cycle(session, cycle_id)
    assert (plan["sms"], plan["voice"], plan["skipped"]) == (3, 0, {"opted_out": 0, "invalid": 0})
    session.commit()
    assert cycle_of(session, cycle_id).state is CycleState.PAUSED
    assert items(session, cycle_id) == {"pending": 3}

    response = post(client, cycle_id, "resume")
    assert response.status_code == 200 and response.json["state"] == "dispatching"


def test_a_cycle_resumed_before_its_plan_ran_goes_back_to_planning(client: Any, session: Any) -> None:
    cycle_id = new_cycle(session, 2, plan=False)
    assert post(client, cycle_id, "pause").status_code == 200

    response = post(client, cycle_id, "resume")

    assert response.status_code == 200 and response.json["state"] == "planning"
    assert cycles.plan_cycle(session, cycle_id) is not None
    session.commit()
    assert cycle_of(session, cycle_id).state is CycleState.DISPATCHING


# -- dispatch: the race with a claimed batch --------------------------------------------------------------------


def test_a_batch_claimed_before_the_cancel_goes_and_nothing_after_it(client: Any, session: Any, at: Any) -> None:
    cycle_id = new_cycle(session, 6)
    cycle = cycles.read_cycle(cycle_id)
    batch = cycles.claim_sms(cycle, 2)  # a dispatcher holds this batch when the cancel lands

    response = post(client, cycle_id, "cancel")

    assert response.status_code == 200 and response.json["cancelled"] == 4
    assert response.json["sms_detail"]["items"]["submitting"] == 2  # in flight: not "not yet sent"
    assert cycles.send_sms_batch(cycle, batch, get_settings()) == "sent"  # the batch being sent goes
    assert cycles.dispatch_sms(cycle_id, budget_seconds=5) == "cancelled"  # nothing after it
    assert sorted(sms_numbers(at)) == sorted(c.phone for c in batch)
    assert items(session, cycle_id) == {"sent": 2, "cancelled": 4}
    assert cycle_of(session, cycle_id).state is CycleState.CANCELLED


@pytest.mark.parametrize("send_status", [405, 500], ids=["InsufficientBalance", "InternalServerError"])
def test_an_in_flight_batch_given_back_after_the_cancel_is_cancelled(
    client: Any, session: Any, at: Any, send_status: int
) -> None:
    """AT refuses the batch that was in flight (an account problem, or a transient error that would be tried
    again): in a cancelled cycle its items are not put back to be sent, and the cycle stays cancelled."""
    at.set_scenario(Scenario.from_dict({"default": {"send_status": send_status}}))
    cycle_id = new_cycle(session, 4)
    cycle = cycles.read_cycle(cycle_id)
    batch = cycles.claim_sms(cycle, 2)
    assert post(client, cycle_id, "cancel").status_code == 200

    cycles.send_sms_batch(cycle, batch, get_settings())

    assert items(session, cycle_id) == {"cancelled": 4}
    assert cycle_of(session, cycle_id).state is CycleState.CANCELLED


def test_a_paused_cycle_sends_nothing_until_resumed(client: Any, session: Any, at: Any) -> None:
    cycle_id = new_cycle(session, 4)
    assert post(client, cycle_id, "pause").status_code == 200

    assert cycles.dispatch_sms(cycle_id, budget_seconds=2) == "paused"
    assert sms_numbers(at) == []

    assert post(client, cycle_id, "resume").status_code == 200
    assert cycles.dispatch_sms(cycle_id, budget_seconds=5) == "idle"
    assert sorted(sms_numbers(at)) == phones(4)
    assert items(session, cycle_id) == {"sent": 4}


def test_calls_stop_between_two_calls_of_a_claimed_batch(client: Any, session: Any, at: Any) -> None:
    """Calls are placed one at a time: a cancel that lands while the first is being placed stops the rest of
    the batch the dispatcher claimed."""
    at.set_scenario(Scenario.from_dict({"hold": ["/call"]}))
    cycle_id = new_cycle(session, 4, ContactStatus.INACTIVE)
    outcome: list[str] = []
    dispatcher = threading.Thread(target=lambda: outcome.append(cycles.dispatch_calls(cycle_id)))
    dispatcher.start()
    wait_for(lambda: at.held() == 1, timeout=10, what="the first call held at AT")

    assert post(client, cycle_id, "cancel").status_code == 200
    at.release()
    dispatcher.join(10)

    assert outcome == ["cancelled"]
    assert len(at.requests("/call")) == 1
    assert items(session, cycle_id) == {"sent": 1, "cancelled": 3}
    session.expire_all()
    assert session.scalar(select(func.count()).select_from(Call).where(Call.send_state == "sent")) == 1


def test_a_call_to_try_again_in_a_cancelled_cycle_is_not_tried_again(
    client: Any, session: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(fallback, "get_settings", lambda: load_settings(call_retries=2))
    cycle_id = new_cycle(session, 1, ContactStatus.INACTIVE)
    item = session.scalars(select(CycleItem).where(CycleItem.cycle_id == cycle_id)).one()
    call = Call(phone=phones(1)[0], cycle_id=cycle_id, cycle_item_id=item.id, send_state="sent", outcome="retry_later")
    session.add(call)
    session.flush()
    item.state, item.call_id, item.attempts = ItemState.SENT, call.id, 1
    session.commit()
    assert post(client, cycle_id, "cancel").status_code == 200

    fallback.after_call_ended(session, call, Action.RETRY_LATER)  # the customer was busy
    session.commit()

    assert items(session, cycle_id) == {"done": 1}  # called once; not called again


# -- housekeeping never revives a cancelled cycle ------------------------------------------------------------


def test_housekeeping_does_not_resend_an_interrupted_send_of_a_cancelled_cycle(
    client: Any, session: Any, at: Any
) -> None:
    cycle_id = new_cycle(session, 3)
    batch = cycles.claim_sms(cycles.read_cycle(cycle_id), 1)  # its dispatcher dies before AT answers
    assert post(client, cycle_id, "cancel").status_code == 200
    session.execute(update(CycleItem).where(CycleItem.state == ItemState.SUBMITTING).values(lease_until=func.now()))
    session.commit()
    box = get_store().inbox(wake=lambda: None)

    wait_for(
        lambda: cycles.reconcile_interrupted(session, box, timedelta(0))["resent"] == 1,
        timeout=10,
        what="the interrupted send looked at",
    )
    session.commit()

    assert items(session, cycle_id) == {"cancelled": 3}  # not put back to be sent
    assert cycles.cycles_to_nudge(session) == [] and cycles.open_cycles(session) == []
    assert cycle_of(session, cycle_id).state is CycleState.CANCELLED
    message = session.get(Message, batch[0].row_id)
    assert message.send_state == "unanswered"  # a late report for it is still matched
    assert sms_numbers(at) == []


def test_housekeeping_resumes_a_resumed_cycle_but_not_a_paused_one(client: Any, session: Any) -> None:
    cycle_id = new_cycle(session, 2)
    assert post(client, cycle_id, "pause").status_code == 200
    assert cycles.cycles_to_nudge(session) == []
    assert post(client, cycle_id, "resume").status_code == 200
    assert cycles.cycles_to_nudge(session) == [(cycle_id, True, False)]
