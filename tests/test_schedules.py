"""Schedules a typo or a stolen token could turn against the customers: expressions that never fire, bad
zones, names and lengths, schedules firing more often than SCHEDULE_MIN_INTERVAL_SECONDS, and a period due
while the schedule's previous cycle is still dispatching (skipped and recorded, never overlapping).

Against the real Postgres. The tick is called as the function beat's task runs
(`worker.tasks.start_due_cycles`) at chosen times, so a period falls due exactly when the test says.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from croniter import croniter
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select, update

from shared import cron as cron_rules
from shared import schedules
from shared.cycles import CycleError
from shared.models import Contact, ContactStatus, Cycle, CycleState, Schedule
from shared.settings import SettingsError, get_settings, load_settings

# `tasks`, not `tasks.start_due_cycles`: see tests/test_cycle_rules.py (collection and Celery's configuration).
from worker import cycles, tasks

DAY = 86_400


def post_schedule(client: Any, headers: dict[str, str], **fields: Any) -> Any:
    doc = {"name": "weekly", "cron": "0 9 * * 1", "message": "Bill due", **fields}
    return client.post("/api/schedules", json=doc, headers=headers)


def schedule_count(session: Any) -> int:
    return session.scalar(select(func.count()).select_from(Schedule))


# -- expressions, zones, names and lengths -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "error"),
    [
        ({"cron": "0 0 30 2 *"}, "cron '0 0 30 2 *' never fires"),
        ({"cron": "0 0 31 4,6,9,11 *"}, "never fires"),
        ({"cron": "0 9 * * " + ",".join(["1"] * 60)}, "cron is too long (127 characters; at most 100)"),
        ({"timezone": "Mars/Base"}, "unknown time zone 'Mars/Base'"),
        ({"timezone": "../../etc/passwd"}, "unknown time zone '../../etc/passwd'"),
        ({"timezone": "Africa/" + "x" * 5000}, "timezone is too long (5007 characters; at most 64)"),
        ({"name": ""}, "name must not be empty"),
        ({"name": "   "}, "name must not be empty"),
        ({"name": "n" * 101}, "name is too long (101 characters; at most 100)"),
    ],
    ids=[
        "30 February",
        "31st of short months",
        "long cron",
        "zone",
        "zone path",
        "long zone",
        "empty name",
        "blank name",
        "long name",
    ],
)
def test_api_refuses_a_schedule_that_cannot_run(
    client: Any, operator_headers: dict[str, str], session: Any, fields: dict[str, Any], error: str
) -> None:
    response = post_schedule(client, operator_headers, **fields)
    assert response.status_code == 400, response.get_data(as_text=True)
    assert error in response.json["error"]
    assert len(response.json["error"]) < 300  # names the problem, does not echo a 5,000-character zone back
    assert schedule_count(session) == 0


def test_a_name_of_the_longest_length_is_kept_whole(client: Any, operator_headers: dict[str, str], session) -> None:
    response = post_schedule(client, operator_headers, name="n" * 100)
    assert response.status_code == 201
    assert session.scalars(select(Schedule.name)).one() == "n" * 100


#: Cron fields as operators and fuzzers write them, including croniter's L, W, # and ranges that never match.
cron_field = st.one_of(
    st.sampled_from(["*", "?", "L", "15W", "LW", "1#5", "5#5", "7#5", "*/7", "1-5", "jan-mar", "mon-fri"]),
    st.integers(0, 60).map(str),
    st.lists(st.integers(0, 32), min_size=1, max_size=4).map(lambda xs: ",".join(map(str, xs))),
    st.tuples(st.integers(0, 31), st.integers(0, 31), st.integers(1, 40)).map(lambda t: f"{t[0]}-{t[1]}/{t[2]}"),
)


class _Undo(Exception):
    """Rolls the nested transaction back after a schedule was added."""


@settings(max_examples=300, derandomize=True, deadline=None, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])  # fmt: skip
@given(fields=st.lists(cron_field, min_size=5, max_size=5))
def test_any_cron_is_accepted_or_refused_by_name(session: Any, fields: list[str]) -> None:
    """Whatever the expression, adding it and showing it either works or is a `CycleError` naming the problem
    (an API 400, a CLI exit 2), never another exception."""
    expression = " ".join(fields)
    try:
        with session.begin_nested():
            added = schedules.add_schedule(session, "fuzz", expression, "hi")
            assert schedules.schedule_json(session, added)["next_run"] is not None
            raise _Undo
    except CycleError as exc:
        assert str(exc)
    except _Undo:
        pass


@pytest.mark.parametrize(
    ("cron", "minimum", "status"),
    [
        ("0 0,23 * * 1,3,5", 23 * 3600, 201),  # never two days in a row: the walk over firing days runs to its bound
        ("0 9 * * 1,4", 3 * DAY, 201),
        ("0 9 * * 1", 7 * DAY, 201),  # 28 years of Mondays
        ("0 9 * * 1", 31 * DAY, 400),  # the largest minimum allowed
    ],
)
def test_the_slowest_checks_stay_bounded(
    make_app: Any,
    operator_headers: dict[str, str],
    session: Any,
    monkeypatch: pytest.MonkeyPatch,
    cron: str,
    minimum: int,
    status: int,
) -> None:
    """The expressions that make the check walk furthest through the calendar: it stops within its bound of
    dates asked of croniter (counted, not timed: a loaded machine made a 1 s limit fail)."""
    asked = []
    get_next = croniter.get_next

    def counted(self: croniter, *args: Any, **kwargs: Any) -> Any:
        asked.append(1)
        return get_next(self, *args, **kwargs)

    monkeypatch.setattr(croniter, "get_next", counted)
    client = make_app(schedule_min_interval_seconds=minimum).test_client()
    response = post_schedule(client, operator_headers, cron=cron)
    assert response.status_code == status, response.get_data(as_text=True)
    assert 0 < len(asked) <= cron_rules.DAY_WALK_STEPS + 10


# -- the minimum interval ------------------------------------------------------------------------------------


def test_the_default_minimum_interval_refuses_every_minute(
    monkeypatch: pytest.MonkeyPatch, make_app: Any, operator_headers: dict[str, str], session: Any
) -> None:
    monkeypatch.delenv("SCHEDULE_MIN_INTERVAL_SECONDS", raising=False)  # the test session sets it to 60
    client = make_app().test_client()
    response = post_schedule(client, operator_headers, cron="* * * * *")
    assert response.status_code == 400, response.get_data(as_text=True)
    assert response.json["error"] == (
        "cron '* * * * *' fires twice within 1 minute; a schedule may fire at most once every 1 hour "
        "(SCHEDULE_MIN_INTERVAL_SECONDS)"
    )
    assert post_schedule(client, operator_headers, name="hourly", cron="0 * * * *").status_code == 201
    assert session.scalars(select(Schedule.name)).all() == ["hourly"]


@pytest.mark.parametrize(
    ("cron", "shortest"),
    [
        ("*/5 * * * *", 300),
        ("0 9,10 * * *", 3600),
        ("0 9 * * *", DAY),
        ("30 8 * * 1-5", DAY),
        ("0 0,23 * * *", 3600),  # 23:00, then 00:00 the next day
        ("0 0,23 * * 1,3,5", 23 * 3600),  # never two days in a row: 23 h within a day is the shortest
        ("0 0,23 28,29 2 *", 3600),  # 28 February 23:00 to 29 February 00:00, in leap years only
        ("0 9 * * 1", 7 * DAY),
        ("0 12 1 * *", 28 * DAY),  # 1 February to 1 March
    ],
)
def test_the_minimum_interval_is_the_shortest_gap_anywhere_in_the_cycle(
    make_app: Any, operator_headers: dict[str, str], session: Any, cron: str, shortest: int
) -> None:
    at_most = make_app(schedule_min_interval_seconds=shortest + 1).test_client()
    refused = post_schedule(at_most, operator_headers, cron=cron)
    assert refused.status_code == 400, refused.get_data(as_text=True)
    assert "SCHEDULE_MIN_INTERVAL_SECONDS" in refused.json["error"]
    exactly = make_app(schedule_min_interval_seconds=shortest).test_client()
    assert post_schedule(exactly, operator_headers, cron=cron).status_code == 201
    assert schedule_count(session) == 1


@pytest.mark.parametrize(("value", "hint"), [("59", "greater than or equal to 60"), ("hourly", "integer")])
def test_the_minimum_interval_setting_is_validated(monkeypatch: pytest.MonkeyPatch, value: str, hint: str) -> None:
    monkeypatch.setenv("SCHEDULE_MIN_INTERVAL_SECONDS", value)
    with pytest.raises(SettingsError, match=rf"SCHEDULE_MIN_INTERVAL_SECONDS: .*{hint}"):
        load_settings()


# -- overlapping periods -------------------------------------------------------------------------------------

NINE = datetime(2026, 12, 1, 9, 0, 20, tzinfo=UTC)  # 20 s into the 09:00 period of an hourly schedule
HOUR = timedelta(hours=1)


@pytest.fixture
def hourly(session: Any, task_lists: Any) -> Schedule:
    session.add_all(Contact(phone=f"+25471100000{i}", status=ContactStatus.NEW) for i in range(3))
    schedule = schedules.add_schedule(session, "hourly", "0 * * * *", "Hourly news")
    schedule.created_at = NINE - timedelta(days=1)
    session.commit()
    return schedule


def scheduled(session: Any, schedule: Schedule) -> list[tuple[str, str]]:
    """(period key, state) of every cycle the schedule has, oldest first."""
    session.expire_all()
    query = select(Cycle.period_key, Cycle.state).where(Cycle.schedule_id == schedule.id).order_by(Cycle.id)
    return [(key, state.value) for key, state in session.execute(query)]


def dispatching_cycle(session: Any, now: datetime) -> int:
    """The tick at `now` starts the period's cycle and the real planning code moves it to `dispatching`."""
    (cycle_id,) = tasks.start_due_cycles(now)
    cycles.plan_cycle(session, cycle_id)
    session.commit()
    assert session.get(Cycle, cycle_id).state is CycleState.DISPATCHING
    return cycle_id


def test_a_period_due_while_the_previous_cycle_dispatches_is_skipped_and_recorded(
    session: Any, hourly: Schedule, client: Any, operator_headers: dict[str, str]
) -> None:
    first = dispatching_cycle(session, NINE)
    ten = NINE + HOUR

    assert tasks.start_due_cycles(ten) == []
    assert tasks.start_due_cycles(ten) == []  # a second beat, or the next tick of the same period
    at_nine, at_ten = (schedules.period_key(hourly, NINE.replace(second=0) + h * HOUR) for h in (0, 1))
    assert scheduled(session, hourly) == [(at_nine, "dispatching"), (at_ten, "skipped")]

    listed = client.get("/api/schedules", headers=operator_headers).json["schedules"]
    last_skip = listed[0]["last_skip"]
    assert last_skip["period"] == "2026-12-01T10:00:00+00:00"
    assert last_skip["reason"] == f"cycle {first} of this schedule is still dispatching"
    skipped_id = last_skip["cycle_id"]
    report = client.get(f"/api/cycles/{skipped_id}", headers=operator_headers).json
    assert (report["state"], report["skip_reason"]) == ("skipped", last_skip["reason"])
    assert (report["sms"], report["voice"], report["skipped"]) == (0, 0, 0)

    session.execute(update(Cycle).where(Cycle.id == first).values(state=CycleState.DONE))
    session.commit()
    assert tasks.start_due_cycles(ten + timedelta(minutes=5)) == []  # 10:00 stays skipped, not started late
    (eleven,) = tasks.start_due_cycles(ten + HOUR)
    at_eleven = schedules.period_key(hourly, NINE.replace(second=0) + 2 * HOUR)
    assert scheduled(session, hourly) == [(at_nine, "done"), (at_ten, "skipped"), (at_eleven, "planning")]
    assert session.get(Cycle, eleven).skip_reason is None


@pytest.mark.parametrize("state", [CycleState.PLANNING, CycleState.PAUSED])
def test_a_previous_cycle_not_finished_in_any_way_holds_the_next_period(
    session: Any, hourly: Schedule, state: CycleState
) -> None:
    (first,) = tasks.start_due_cycles(NINE)
    session.execute(update(Cycle).where(Cycle.id == first).values(state=state))
    session.commit()
    assert tasks.start_due_cycles(NINE + HOUR) == []
    assert [s for _, s in scheduled(session, hourly)] == [state.value, "skipped"]


def test_another_schedule_or_a_manual_cycle_does_not_hold_a_period(session: Any, hourly: Schedule) -> None:
    daily = schedules.add_schedule(session, "daily", "0 10 * * *", "Daily news")
    daily.created_at = NINE  # due first at 10:00 today
    session.add(Cycle(message="by hand", state=CycleState.DISPATCHING, created_at=NINE))
    session.commit()
    dispatching_cycle(session, NINE)  # the hourly schedule's 09:00 cycle, still dispatching at 10:00
    started = tasks.start_due_cycles(NINE + HOUR)
    assert len(started) == 1 and session.get(Cycle, started[0]).schedule_id == daily.id
    assert [s for _, s in scheduled(session, hourly)] == ["dispatching", "skipped"]


def test_a_stored_schedule_that_cannot_run_does_not_stop_the_others(session: Any, hourly: Schedule) -> None:
    """A schedule stored before its expression was refused (30 February) is logged, not fatal to the tick."""
    session.add(Schedule(name="never", cron="0 0 30 2 *", timezone="UTC", message="m", created_at=hourly.created_at))
    session.commit()
    assert len(tasks.start_due_cycles(NINE)) == 1
    never = session.scalars(select(Schedule).where(Schedule.name == "never")).one()
    assert schedules.schedule_json(session, never)["next_run"] is None


# -- a tick too late: SCHEDULE_MISFIRE_SECONDS ----------------------------------------------------------------

MISSED_AT_23_30 = (
    "missed: its first tick came 14 hours 30 minutes 20 seconds after its time, later than "
    "SCHEDULE_MISFIRE_SECONDS (1 hour)"
)


@pytest.fixture
def daily(session: Any, task_lists: Any) -> Schedule:
    """A schedule at 09:00 UTC every day, added the day before NINE."""
    session.add(Contact(phone="+254711000001", status=ContactStatus.NEW))
    schedule = schedules.add_schedule(session, "daily", "0 9 * * *", "Morning news")
    schedule.created_at = NINE - timedelta(days=1)
    session.commit()
    return schedule


def test_after_a_beat_outage_the_period_is_recorded_missed_once_and_the_next_runs_on_time(
    session: Any, daily: Schedule, client: Any, operator_headers: dict[str, str]
) -> None:
    """Beat was down from before 09:00 to 23:30: no 09:00 cycle at 23:30, one `missed` row however many ticks
    follow, and the next day's 09:00 runs."""
    back = NINE.replace(hour=23, minute=30)
    ticks = [back + n * timedelta(minutes=10) for n in range(57)]  # until 08:50 the next day
    assert [tasks.start_due_cycles(now) for now in ticks] == [[]] * len(ticks)
    at_nine = schedules.period_key(daily, NINE.replace(second=0))
    assert scheduled(session, daily) == [(at_nine, "skipped")]

    last_skip = client.get("/api/schedules", headers=operator_headers).json["schedules"][0]["last_skip"]
    assert (last_skip["period"], last_skip["reason"]) == ("2026-12-01T09:00:00+00:00", MISSED_AT_23_30)
    report = client.get(f"/api/cycles/{last_skip['cycle_id']}", headers=operator_headers).json
    assert (report["state"], report["skip_reason"], report["sms"]) == ("skipped", MISSED_AT_23_30, 0)
    (listed,) = client.get("/api/cycles", headers=operator_headers).json["cycles"]
    assert (listed["state"], listed["schedule_id"], listed["skip_reason"]) == ("skipped", daily.id, MISSED_AT_23_30)

    (next_day,) = tasks.start_due_cycles(NINE + timedelta(days=1))
    at_nine_next_day = schedules.period_key(daily, NINE.replace(second=0) + timedelta(days=1))
    assert scheduled(session, daily) == [(at_nine, "skipped"), (at_nine_next_day, "planning")]
    assert session.get(Cycle, next_day).skip_reason is None


@pytest.mark.parametrize(("late", "started"), [(3600, True), (3601, False)])
def test_a_tick_up_to_the_misfire_window_late_still_starts_the_period(
    session: Any, daily: Schedule, late: int, started: bool
) -> None:
    planned = NINE.replace(second=0)
    assert len(tasks.start_due_cycles(planned + timedelta(seconds=late))) == started
    assert [state for _, state in scheduled(session, daily)] == ["planning" if started else "skipped"]


def test_the_misfire_window_follows_the_setting(monkeypatch: pytest.MonkeyPatch, session: Any, daily: Schedule) -> None:
    monkeypatch.setenv("SCHEDULE_MISFIRE_SECONDS", "60")
    get_settings.cache_clear()
    try:
        assert tasks.start_due_cycles(NINE.replace(minute=1, second=1)) == []
    finally:
        monkeypatch.undo()
        get_settings.cache_clear()
    (reason,) = session.scalars(select(Cycle.skip_reason).where(Cycle.schedule_id == daily.id))
    assert reason == (
        "missed: its first tick came 1 minute 1 second after its time, later than SCHEDULE_MISFIRE_SECONDS (1 minute)"
    )


def test_a_late_tick_while_the_previous_cycle_runs_is_recorded_missed(session: Any, daily: Schedule) -> None:
    """Lateness is decided first: the period was never going to start, whatever else holds it."""
    dispatching_cycle(session, NINE)
    assert tasks.start_due_cycles(NINE + timedelta(days=1, minutes=90)) == []
    assert [state for _, state in scheduled(session, daily)] == ["dispatching", "skipped"]
    (reason,) = session.scalars(select(Cycle.skip_reason).where(Cycle.state == CycleState.SKIPPED))
    assert reason.startswith(f"{schedules.MISSED}: its first tick came 1 hour 30 minutes 20 seconds after")


@pytest.mark.parametrize(("value", "hint"), [("0", "greater than 0"), ("-5", "greater than 0"), ("1h", "integer")])
def test_the_misfire_setting_is_validated(monkeypatch: pytest.MonkeyPatch, value: str, hint: str) -> None:
    monkeypatch.setenv("SCHEDULE_MISFIRE_SECONDS", value)
    with pytest.raises(SettingsError, match=rf"SCHEDULE_MISFIRE_SECONDS: .*{hint}"):
        load_settings()


def test_the_misfire_window_must_leave_room_for_two_ticks(monkeypatch: pytest.MonkeyPatch) -> None:
    """A period is seen only at a tick: a window shorter than two tick intervals would miss periods beat ticked
    on time."""
    monkeypatch.setenv("SCHEDULE_TICK_SECONDS", "30")
    monkeypatch.setenv("SCHEDULE_MISFIRE_SECONDS", "59")
    with pytest.raises(SettingsError, match=r"SCHEDULE_MISFIRE_SECONDS: must be at least twice SCHEDULE_TICK_SECONDS"):
        load_settings()
    monkeypatch.setenv("SCHEDULE_MISFIRE_SECONDS", "60")
    assert load_settings().schedule_misfire_seconds == 60


def test_the_misfire_setting_defaults_to_an_hour(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SCHEDULE_MISFIRE_SECONDS", raising=False)
    assert load_settings().schedule_misfire_seconds == 3600
