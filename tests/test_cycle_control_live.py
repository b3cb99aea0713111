"""Cancel and pause a cycle while a real worker dispatches it: receiver, Redis, Postgres, a Celery worker with
beat and the AT simulator holding AT's answers, so the operator's request lands mid-dispatch (the rules one
by one, in-process: tests/test_cycle_control.py)."""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import select

from shared.models import Contact, CycleItem, ItemState
from simulator.scenario import Scenario
from tests.conftest import wait_for
from tests.services import WorkerProcess
from tests.test_cycle import add_contacts, api, start, state_of

#: Batches of 2 and two SMS dispatchers per cycle (worker.tasks.SMS_DISPATCHERS): at most 4 SMS are in AT's
#: hands when a request lands while AT holds its answers.
BATCH = 2
IN_FLIGHT_AT_MOST = 2 * BATCH
HOLD_SMS = {"hold": ["/version1/messaging"]}


@pytest.fixture(scope="module")
def worker(environment: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[WorkerProcess]:
    """The conftest worker, with small SMS batches so a cycle of ten takes several."""
    process = WorkerProcess(tmp_path_factory.mktemp("worker"), "control", {**os.environ, "SMS_BATCH_SIZE": str(BATCH)})
    yield process
    process.stop()


def texted(simulator: Any) -> list[str]:
    """Every number AT was asked to text, once per time."""
    return [n for r in simulator.requests("/version1/messaging") for n in r["form"]["to"].split(",")]


def item_states(session: Any, cycle_id: int) -> dict[str, str]:
    session.expire_all()
    rows = session.execute(
        select(Contact.phone, CycleItem.state)
        .join(Contact, Contact.id == CycleItem.contact_id)
        .where(CycleItem.cycle_id == cycle_id)
    )
    return {phone: state.value for phone, state in rows}


def settled(session: Any, cycle_id: int) -> bool:
    """No item is claimed or in AT's hands any more."""
    return not {"claimed", "submitting"} & set(item_states(session, cycle_id).values())


def housekeeping_runs(worker: WorkerProcess) -> int:
    """Cycle housekeeping runs finished, from the worker's log."""
    return sum("reach.cycle.housekeeping[" in line and "succeeded" in line for line in worker.log().splitlines())


def two_housekeeping_periods(worker: WorkerProcess) -> None:
    """Wait until cycle housekeeping (HOUSEKEEPING_SECONDS, 2 s in tests) has run twice more."""
    seen = housekeeping_runs(worker)
    wait_for(lambda: housekeeping_runs(worker) >= seen + 2, timeout=20, what="two housekeeping runs")


def hold_then(live: Any, receiver: str, action: str, cycle_id: int) -> dict[str, Any]:
    """While AT holds the first batches, send the operator's request; then let AT answer everything."""
    wait_for(lambda: live.held() >= 1, timeout=30, what="the first batch held at AT")
    response = api(receiver, "POST", f"/api/cycles/{cycle_id}/{action}")
    live.set_scenario(Scenario.from_dict({}))  # AT answers at once from now on
    live.release()
    assert response.status_code == 200, response.text
    return response.json()


def test_a_cancel_mid_dispatch_stops_every_send_after_it(live: Any, receiver: str, session: Any, worker: Any) -> None:
    live.set_scenario(Scenario.from_dict(HOLD_SMS))
    phones = [f"+2547114{i:05d}" for i in range(10)]
    add_contacts(receiver, phones)
    cycle_id = start(receiver, "A typo to everyone")

    answer = hold_then(live, receiver, "cancel", cycle_id)

    assert answer["state"] == "cancelled"
    wait_for(lambda: settled(session, cycle_id), timeout=20, what="the batches in flight recorded")
    two_housekeeping_periods(worker)  # housekeeping neither resends nor revives anything
    states = item_states(session, cycle_id)
    sent = sorted(p for p, s in states.items() if s == "sent")
    cancelled = sorted(p for p, s in states.items() if s == "cancelled")
    assert sorted(texted(live)) == sent  # only what was in AT's hands, each once
    assert 1 <= len(sent) <= IN_FLIGHT_AT_MOST and len(sent) + len(cancelled) == len(phones)
    report = api(receiver, "GET", f"/api/cycles/{cycle_id}").json()
    assert (report["state"], report["cancelled"], report["sms"]) == ("cancelled", len(cancelled), len(phones))
    assert report["sms_detail"]["items"]["cancelled"] == len(cancelled)
    assert report["sms_detail"]["sent"] == len(sent)
    assert state_of(session, cycle_id) == "cancelled"


def test_a_paused_cycle_sends_nothing_until_resumed_then_each_contact_once(
    live: Any, receiver: str, session: Any, worker: Any
) -> None:
    live.set_scenario(Scenario.from_dict(HOLD_SMS))
    phones = [f"+2547115{i:05d}" for i in range(8)]
    add_contacts(receiver, phones)
    cycle_id = start(receiver, "Your bill is ready")

    answer = hold_then(live, receiver, "pause", cycle_id)

    assert (answer["state"], answer["paused_by"]) == ("paused", "operator")
    wait_for(lambda: settled(session, cycle_id), timeout=20, what="the batches in flight recorded")
    in_flight = texted(live)
    two_housekeeping_periods(worker)
    assert texted(live) == in_flight  # nothing sent while paused, housekeeping included
    assert len(in_flight) <= IN_FLIGHT_AT_MOST
    assert Counter(item_states(session, cycle_id).values())["pending"] == len(phones) - len(in_flight)
    assert state_of(session, cycle_id) == "paused"

    resumed = api(receiver, "POST", f"/api/cycles/{cycle_id}/resume")

    assert resumed.status_code == 200 and resumed.json()["state"] == "dispatching"
    wait_for(lambda: state_of(session, cycle_id) == "done", timeout=30, what="done after resume")
    assert Counter(texted(live)) == dict.fromkeys(phones, 1)  # everyone, exactly once
    assert set(item_states(session, cycle_id).values()) == {ItemState.SENT.value}
