"""The dashboard's cancel, pause and resume buttons: POST forms under /dashboard (signed in, sent from the
dashboard's own origin), cancel only after a confirmation page; through the Flask test client against the
real Postgres and Redis (no worker: tasks a resume sends are removed after each test)."""

from __future__ import annotations

import re
from typing import Any

import pytest
import redis as redis_lib
from sqlalchemy import insert

from shared import cycle_report
from shared import cycles as shared_cycles
from shared.models import Contact, ContactStatus, Cycle, CycleState
from tests.conftest import API_TOKEN
from tests.test_dashboard import SAME_ORIGIN, sign_in
from worker import cycles


@pytest.fixture
def operator(client: Any) -> Any:
    """A browser signed in to the dashboard."""
    assert sign_in(client, API_TOKEN).status_code == 303
    return client


def running_cycle(session: Any, n: int = 3) -> int:
    session.execute(insert(Contact), [{"phone": f"+2547116{i:05d}", "status": ContactStatus.NEW} for i in range(n)])
    cycle_id = shared_cycles.start_cycle(session, "Your bill is ready")
    cycles.plan_cycle(session, cycle_id)
    session.commit()
    return cycle_id


def state_of(session: Any, cycle_id: int) -> CycleState:
    session.expire_all()
    return session.get(Cycle, cycle_id).state


def buttons(page: str, cycle_id: int) -> list[str]:
    """The control buttons and links shown in the cycle's row, by their `data-action`."""
    row = re.search(rf'<tr data-cycle="{cycle_id}">(.*?)</tr>', page, re.S)
    assert row, page
    return re.findall(r'data-action="(\w+)"', row.group(1))


def test_each_running_cycle_shows_the_buttons_its_state_allows(operator: Any, session: Any) -> None:
    running = running_cycle(session)
    paused = shared_cycles.start_cycle(session, "Held")
    finished = shared_cycles.start_cycle(session, "Over")
    session.get(Cycle, paused).state = CycleState.PAUSED
    session.get(Cycle, finished).state = CycleState.DONE
    session.commit()

    page = operator.get("/dashboard").get_data(as_text=True)

    assert buttons(page, running) == ["pause", "cancel"]
    assert buttons(page, paused) == ["resume", "cancel"]
    assert buttons(page, finished) == []


def test_pause_then_resume_from_the_dashboard(operator: Any, session: Any, task_lists: redis_lib.Redis) -> None:
    cycle_id = running_cycle(session)

    paused = operator.post(f"/dashboard/cycles/{cycle_id}/pause", headers=SAME_ORIGIN)

    assert paused.status_code == 303 and paused.headers["Location"].endswith("/dashboard")
    assert state_of(session, cycle_id) is CycleState.PAUSED
    page = operator.get("/dashboard").get_data(as_text=True)
    assert "paused (paused by the operator)" in page and buttons(page, cycle_id) == ["resume", "cancel"]

    resumed = operator.post(f"/dashboard/cycles/{cycle_id}/resume", headers=SAME_ORIGIN)

    assert resumed.status_code == 303
    assert state_of(session, cycle_id) is CycleState.DISPATCHING
    assert task_lists.llen("send") == 2  # the dispatchers nudged, as the API does


def test_cancel_asks_first_and_only_the_confirmation_cancels(operator: Any, session: Any) -> None:
    cycle_id = running_cycle(session, 3)
    page = operator.get("/dashboard").get_data(as_text=True)
    assert f'href="/dashboard/cycles/{cycle_id}/cancel"' in page  # the row's button opens the question

    question = operator.get(f"/dashboard/cycles/{cycle_id}/cancel")

    assert question.status_code == 200
    text = question.get_data(as_text=True)
    assert f"Cancel cycle #{cycle_id}?" in text and "3 messages and calls not sent yet" in text
    assert f'action="/dashboard/cycles/{cycle_id}/cancel"' in text and 'name="confirm" value="yes"' in text
    assert "script-src" not in question.headers["Content-Security-Policy"]  # no script: a second page, not a JS confirm
    assert state_of(session, cycle_id) is CycleState.DISPATCHING  # asking changes nothing

    unconfirmed = operator.post(f"/dashboard/cycles/{cycle_id}/cancel", headers=SAME_ORIGIN)
    assert unconfirmed.status_code == 303 and unconfirmed.headers["Location"].endswith(f"/cycles/{cycle_id}/cancel")
    assert state_of(session, cycle_id) is CycleState.DISPATCHING

    done = operator.post(f"/dashboard/cycles/{cycle_id}/cancel", data={"confirm": "yes"}, headers=SAME_ORIGIN)

    assert done.status_code == 303 and done.headers["Location"].endswith("/dashboard")
    assert state_of(session, cycle_id) is CycleState.CANCELLED
    assert cycle_report.report(session, cycle_id)["cancelled"] == 3
    assert buttons(operator.get("/dashboard").get_data(as_text=True), cycle_id) == []


@pytest.mark.parametrize("action", ["cancel", "pause", "resume"])
def test_a_post_from_another_site_is_refused(operator: Any, session: Any, action: str) -> None:
    cycle_id = running_cycle(session)
    response = operator.post(
        f"/dashboard/cycles/{cycle_id}/{action}", data={"confirm": "yes"}, headers={"Origin": "https://evil.example"}
    )
    assert response.status_code == 403
    assert state_of(session, cycle_id) is CycleState.DISPATCHING


@pytest.mark.parametrize("action", ["cancel", "pause", "resume"])
def test_without_a_session_nothing_changes(client: Any, session: Any, action: str) -> None:
    cycle_id = running_cycle(session)
    response = client.post(f"/dashboard/cycles/{cycle_id}/{action}", data={"confirm": "yes"}, headers=SAME_ORIGIN)
    assert response.status_code == 303 and response.headers["Location"].endswith("/dashboard/login")
    assert client.get(f"/dashboard/cycles/{cycle_id}/cancel").status_code == 303
    assert state_of(session, cycle_id) is CycleState.DISPATCHING


@pytest.mark.parametrize(
    ("method", "action", "data"),
    [("post", "pause", None), ("post", "cancel", {"confirm": "yes"}), ("get", "cancel", None)],
)
def test_a_finished_or_unknown_cycle_gets_a_page_saying_why(
    operator: Any, session: Any, method: str, action: str, data: Any
) -> None:
    cycle_id = running_cycle(session)
    session.get(Cycle, cycle_id).state = CycleState.DONE
    session.commit()
    send = getattr(operator, method)
    headers = SAME_ORIGIN if method == "post" else {}

    finished = send(f"/dashboard/cycles/{cycle_id}/{action}", data=data, headers=headers)
    unknown = send(f"/dashboard/cycles/999/{action}", data=data, headers=headers)

    assert finished.status_code == 409
    assert f"cycle {cycle_id} is done: there is nothing left to {action}" in finished.get_data(as_text=True)
    assert unknown.status_code == 404 and "no cycle 999" in unknown.get_data(as_text=True)
    assert state_of(session, cycle_id) is CycleState.DONE
