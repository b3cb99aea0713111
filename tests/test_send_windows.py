"""Send windows (design §4.2) in a cycle: what falls outside its window waits, shows as `waiting`, and goes
when the window opens; never dropped or failed. The operator API through the Flask test client, planning and
the dispatchers in-process against the real Postgres and Redis and the AT simulator.

Windows are chosen around the real time in Nairobi (the contacts' +254 numbers): one that holds now and one
that opens an hour from now. The opening is reached by moving the dispatchers' clock (`items.now`) to it and
the items' due time (`next_attempt_at`) back to now, not by waiting an hour.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from click.testing import CliRunner, Result
from sqlalchemy import func, insert, select, update
from sqlalchemy.orm import Session

from reach_cli.main import EXIT_USAGE, cli
from shared import cycle_report
from shared import cycles as shared_cycles
from shared.models import Call, Channel, Contact, ContactStatus, Cycle, CycleItem, CycleState, ItemState, Message
from simulator.scenario import Scenario
from tests.conftest import API_TOKEN
from tests.cycle_support import item_windows, make_items_due, plan_new_cycle
from tests.test_dashboard import sign_in
from worker import cycles
from worker.cycles import items as cycle_items

AUTH = {"Authorization": f"Bearer {API_TOKEN}"}
NAIROBI = ZoneInfo("Africa/Nairobi")


def window_from(hours: int, length: int = 1) -> tuple[str, datetime]:
    """A window starting `hours` from the current minute in Nairobi (negative: already open), and when it
    starts (UTC)."""
    start = datetime.now(UTC).replace(second=0, microsecond=0) + timedelta(hours=hours)
    end = start + timedelta(hours=length)
    local = f"{start.astimezone(NAIROBI):%H:%M}-{end.astimezone(NAIROBI):%H:%M}"
    return local, start


@dataclass(frozen=True)
class Hours:
    """Windows around the time a test starts: one open now, one closed now that opens at `opens_at`."""

    open_now: str
    closed_now: str
    opens_at: datetime


@pytest.fixture
def hours() -> Hours:
    open_now, _ = window_from(-1, 2)
    closed_now, opens_at = window_from(1)
    return Hours(open_now, closed_now, opens_at)


@pytest.fixture
def at(simulator: Any, clean: None) -> Iterator[Any]:
    simulator.reset()
    simulator.set_scenario(Scenario.from_dict({}))
    yield simulator
    simulator.release()


def new_cycle(session: Any, status: ContactStatus, n: int = 2, **windows: str) -> int:
    contacts = [{"phone": f"+2547114{i:05d}", "status": status} for i in range(n)]
    return plan_new_cycle(session, contacts, "Your bill is ready", **windows)


def report(client: Any, cycle_id: int) -> dict[str, Any]:
    response = client.get(f"/api/cycles/{cycle_id}", headers=AUTH)
    assert response.status_code == 200
    return response.json


def open_the_window(session: Any, monkeypatch: pytest.MonkeyPatch, cycle_id: int, hours: Hours) -> None:
    """Time reaches the window's opening: the dispatchers' clock says so, and the items are due."""
    monkeypatch.setattr(cycle_items, "now", lambda: hours.opens_at + timedelta(seconds=1))
    make_items_due(session, cycle_id)


def test_a_call_outside_its_window_waits_and_goes_when_the_window_opens(
    client: Any, session: Any, at: Any, monkeypatch: pytest.MonkeyPatch, hours: Hours
) -> None:
    cycle_id = new_cycle(session, ContactStatus.INACTIVE, call_window=hours.closed_now)

    # Planned to wait: pending until the window's opening, in the customer's (Nairobi's) time.
    assert item_windows(session, cycle_id) == [(ItemState.PENDING, True, hours.opens_at)] * 2
    shown = report(client, cycle_id)
    assert (shown["state"], shown["voice"], shown["waiting"], shown["call_window"]) == (
        "dispatching",
        2,
        2,
        hours.closed_now,
    )

    # A dispatcher places nothing and does not poll for it (housekeeping nudges it at the opening).
    assert cycles.dispatch_calls(cycle_id) == "idle"
    assert at.requests("/call") == []
    assert cycles.cycles_to_nudge(session) == []
    assert not cycles.finish_if_done(session, cycle_id)  # the cycle is not done while items wait
    session.commit()
    assert report(client, cycle_id)["state"] == "dispatching"

    open_the_window(session, monkeypatch, cycle_id, hours)
    assert cycles.cycles_to_nudge(session) == [(cycle_id, False, True)]
    assert cycles.dispatch_calls(cycle_id) == "idle"

    assert len(at.requests("/call")) == 2
    assert [(state, waiting) for state, waiting, _due in item_windows(session, cycle_id)] == [
        (ItemState.SENT, False)
    ] * 2
    assert report(client, cycle_id)["waiting"] == 0


def test_a_dispatcher_gives_back_an_item_whose_window_closed_after_planning(
    client: Any, session: Any, at: Any, hours: Hours
) -> None:
    cycle_id = new_cycle(session, ContactStatus.INACTIVE, call_window=hours.open_now)
    assert [waiting for _s, waiting, _d in item_windows(session, cycle_id)] == [False, False]
    assert report(client, cycle_id)["waiting"] == 0
    # The window closes before a dispatcher claims the items.
    session.execute(update(Cycle).where(Cycle.id == cycle_id).values(call_window=hours.closed_now))
    session.commit()

    assert cycles.dispatch_calls(cycle_id) == "idle"

    assert at.requests("/call") == []
    assert item_windows(session, cycle_id) == [(ItemState.PENDING, True, hours.opens_at)] * 2
    session.expire_all()
    assert session.scalar(select(func.count()).select_from(Call)) == 0  # no call row: nothing was attempted
    assert session.scalar(select(CycleItem.attempts).where(CycleItem.cycle_id == cycle_id).limit(1)) == 0
    assert report(client, cycle_id)["waiting"] == 2


def test_an_sms_outside_its_window_waits_too(
    client: Any, session: Any, at: Any, monkeypatch: pytest.MonkeyPatch, hours: Hours
) -> None:
    cycle_id = new_cycle(session, ContactStatus.NEW, sms_window=hours.closed_now)
    assert report(client, cycle_id)["waiting"] == 2

    assert cycles.dispatch_sms(cycle_id, budget_seconds=5) == "idle"
    assert at.requests("/version1/messaging") == []
    session.expire_all()
    assert session.scalar(select(func.count()).select_from(Message)) == 0

    open_the_window(session, monkeypatch, cycle_id, hours)
    assert cycles.dispatch_sms(cycle_id, budget_seconds=5) == "idle"
    assert len(at.requests("/version1/messaging")) == 1
    assert [state for state, _w, _d in item_windows(session, cycle_id)] == [ItemState.SENT] * 2


def test_each_channel_keeps_its_own_window(client: Any, session: Any, at: Any, hours: Hours) -> None:
    """SMS `always` (the default) go at once while the calls of the same cycle wait for theirs."""
    session.execute(insert(Contact), [{"phone": "+254711500001", "status": ContactStatus.NEW}])
    cycle_id = new_cycle(session, ContactStatus.INACTIVE, call_window=hours.closed_now)

    shown = report(client, cycle_id)
    assert (shown["sms"], shown["voice"], shown["waiting"], shown["sms_window"]) == (1, 2, 2, "always")
    assert cycles.dispatch_sms(cycle_id, budget_seconds=5) == "idle"
    assert len(at.requests("/version1/messaging")) == 1
    assert cycles.dispatch_calls(cycle_id) == "idle"
    assert at.requests("/call") == []


# -- the operator API ----------------------------------------------------------------------------------------


def test_a_cycle_takes_its_windows_from_the_request(client: Any, session: Any) -> None:
    body = {"message": "hi", "sms_window": "21:00-07:00", "call_window": "always"}
    response = client.post("/api/cycles", json=body, headers=AUTH)
    assert response.status_code == 202, response.json
    session.expire_all()
    cycle = session.get(Cycle, response.json["id"])
    assert (cycle.sms_window, cycle.call_window) == ("21:00-07:00", "always")
    shown = report(client, cycle.id)
    assert (shown["sms_window"], shown["call_window"], shown["waiting"]) == ("21:00-07:00", "always", 0)


def test_a_cycle_without_windows_uses_the_settings(client: Any, session: Any) -> None:
    response = client.post("/api/cycles", json={"message": "hi"}, headers=AUTH)
    shown = report(client, response.json["id"])
    assert (shown["sms_window"], shown["call_window"]) == ("always", "always")  # tests/conftest.py: CALL_WINDOW


@pytest.mark.parametrize("dry_run", [False, True])
@pytest.mark.parametrize(
    ("field", "value", "says"),
    [
        ("sms_window", "8-20", "HH:MM-HH:MM"),
        ("call_window", "08:00-25:00", "HH:MM-HH:MM"),
        ("call_window", "10:00-10:00", "starts where it ends"),
        ("sms_window", 800, "must be text"),
        ("call_window", ["08:00", "20:00"], "must be text"),
    ],
)
def test_a_bad_window_is_a_400_naming_the_field(
    client: Any, session: Any, field: str, value: object, says: str, dry_run: bool
) -> None:
    body = {"message": "hi", field: value, "dry_run": dry_run}
    response = client.post("/api/cycles", json=body, headers=AUTH)
    assert response.status_code == 400
    assert field in response.json["error"] and says in response.json["error"]
    session.expire_all()
    assert session.scalar(select(func.count()).select_from(Cycle)) == 0


def test_a_dry_run_takes_windows(client: Any, session: Any) -> None:
    body = {"message": "hi", "call_window": "08:00-20:00", "sms_window": "always", "dry_run": True}
    response = client.post("/api/cycles", json=body, headers=AUTH)
    assert response.status_code == 200, response.json


def test_a_cycle_waiting_for_its_window_is_not_done(session: Any, hours: Hours) -> None:
    cycle_id = new_cycle(session, ContactStatus.INACTIVE, call_window=hours.closed_now)
    assert not cycles.finish_if_done(session, cycle_id)
    assert session.get(Cycle, cycle_id).state is CycleState.DISPATCHING


# -- reach cycle run -----------------------------------------------------------------------------------------


def reach(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args), prog_name="reach", catch_exceptions=False)


def test_reach_cycle_run_takes_windows(session: Any, task_lists: Any) -> None:
    result = reach("cycle", "run", "--message", "hi", "--sms-window", "21:00-07:00", "--call-window", "09:30-17:00")
    assert result.exit_code == 0, result.stderr
    session.expire_all()
    cycle = session.scalars(select(Cycle)).one()
    assert (cycle.sms_window, cycle.call_window) == ("21:00-07:00", "09:30-17:00")


@pytest.mark.parametrize("dry_run", [[], ["--dry-run"]], ids=["run", "dry run"])
@pytest.mark.parametrize("option", ["--sms-window", "--call-window"])
def test_reach_cycle_run_refuses_a_bad_window_naming_the_option(
    session: Any, task_lists: Any, option: str, dry_run: list[str]
) -> None:
    result = reach("cycle", "run", "--message", "hi", option, "9-5", *dry_run)
    assert result.exit_code == EXIT_USAGE
    assert result.stderr.startswith(f"error: {option}: not a send window '9-5'"), result.stderr
    session.expire_all()
    assert session.scalar(select(func.count()).select_from(Cycle)) == 0


def test_reach_cycle_show_says_what_waits_for_its_window(session: Any, hours: Hours) -> None:
    cycle_id = new_cycle(session, ContactStatus.INACTIVE, call_window=hours.closed_now)
    result = reach("cycle", "show", str(cycle_id))
    assert result.exit_code == 0, result.stderr
    assert (
        f"waiting    2 items held for their send window (SMS always, calls {hours.closed_now}, local time)"
        in result.output
    )


# -- both databases ------------------------------------------------------------------------------------------


def test_windows_plan_and_hold_the_same_on_both_databases(dialect_engine: Any, hours: Hours) -> None:
    """Embedded mode (SQLite) plans and claims through the same statements as Postgres."""
    with Session(dialect_engine) as session:
        session.execute(
            insert(Contact), [{"phone": f"+2547116{i:05d}", "status": ContactStatus.INACTIVE} for i in range(3)]
        )
        session.execute(insert(Contact), [{"phone": "+254711700001", "status": ContactStatus.NEW}])
        cycle_id = shared_cycles.start_cycle(session, "Your bill is ready", call_window=hours.closed_now)
        cycles.plan_cycle(session, cycle_id)
        session.commit()

        rows = session.execute(
            select(CycleItem.channel, CycleItem.waiting_for_window, CycleItem.next_attempt_at).where(
                CycleItem.cycle_id == cycle_id
            )
        ).all()
        held = [due.replace(tzinfo=UTC) for channel, waiting, due in rows if channel is Channel.VOICE and waiting]
        assert held == [hours.opens_at] * 3
        assert [waiting for channel, waiting, _due in rows if channel is Channel.SMS] == [False]
        shown = cycle_report.report(session, cycle_id)
        assert shown is not None and (shown["waiting"], shown["voice_detail"]["waiting"]) == (3, 3)

        assert cycle_items.due_items(session, cycle_id, Channel.VOICE, 10) == []  # not due before the opening
        assert len(cycle_items.due_items(session, cycle_id, Channel.SMS, 10)) == 1
        # Due now but the window is closed: held again at claim.
        session.execute(update(CycleItem).values(next_attempt_at=datetime.now(UTC) - timedelta(minutes=1)))
        assert cycle_items.due_items(session, cycle_id, Channel.VOICE, 10) == []
        assert cycle_report.report(session, cycle_id)["waiting"] == 3


def test_the_dashboards_cycle_page_shows_the_windows_and_what_waits(client: Any, session: Any, hours: Hours) -> None:
    cycle_id = new_cycle(session, ContactStatus.INACTIVE, call_window=hours.closed_now)
    assert sign_in(client, API_TOKEN).status_code == 303

    page = client.get(f"/dashboard/cycles/{cycle_id}").get_data(as_text=True)

    shown = re.search(r'data-field="windows">([^<]*)<', page)
    assert shown is not None, page
    assert " ".join(shown[1].split()) == (
        f"SMS always, calls {hours.closed_now} (each customer's local time); 2 waiting for their window"
    )


def test_each_number_is_held_in_its_own_zone_and_the_next_due_item_is_claimed(session: Any, hours: Hours) -> None:
    """A window open now in Nairobi is closed in New York (7 or 8 hours behind): a dispatcher taking one item
    at a time holds the New York number's and goes on to the Nairobi number's in the same claim."""
    session.execute(
        insert(Contact),
        [
            {"phone": "+12125550100", "status": ContactStatus.NEW},
            {"phone": "+254711800001", "status": ContactStatus.NEW},
        ],
    )
    cycle_id = shared_cycles.start_cycle(session, "Your bill is ready")
    cycles.plan_cycle(session, cycle_id)
    session.execute(update(Cycle).where(Cycle.id == cycle_id).values(sms_window=hours.open_now))
    new_york, nairobi = session.scalars(
        select(CycleItem.id).join(Contact, Contact.id == CycleItem.contact_id).order_by(Contact.phone)
    ).all()
    for item_id, minutes in ((new_york, 2), (nairobi, 1)):  # New York's comes first
        due = datetime.now(UTC) - timedelta(minutes=minutes)
        session.execute(update(CycleItem).where(CycleItem.id == item_id).values(next_attempt_at=due))

    assert cycle_items.due_items(session, cycle_id, Channel.SMS, 1) == [nairobi]
    held = session.execute(
        select(CycleItem.waiting_for_window, CycleItem.next_attempt_at).where(CycleItem.id == new_york)
    ).one()
    assert held.waiting_for_window and held.next_attempt_at > datetime.now(UTC)
    assert held.next_attempt_at.astimezone(ZoneInfo("America/New_York")).strftime("%H:%M") == hours.open_now[:5]
