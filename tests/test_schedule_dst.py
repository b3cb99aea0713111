"""Schedules across daylight-saving changes: exactly one run per local period, at the time the rule says.

The rule (shared/cron.py): a local time that happens twice (the clock goes back) runs once, at its first
occurrence; a local time that does not exist (the clock goes forward) is read with the UTC offset in force
before the change, so it runs the gap's length later on the wall clock, the same instant of real time as the
day before (RFC 5545 reads local times so). A schedule that fires in every hour of the day runs in both
passes of a repeated hour: every hour of real time gets its run, none twice.

Zones and dates (from this machine's zoneinfo):
- Europe/London 2026: Sunday 29 March 01:00 GMT -> 02:00 BST (01:00 UTC); Sunday 25 October 02:00 BST ->
  01:00 GMT (01:00 UTC), so 01:00-02:00 happens twice.
- Africa/Cairo 2025 (DST again since 2023): Friday 25 April 00:00 EET -> 01:00 EEST (22:00 UTC the day
  before); Thursday 30 October 24:00 EEST -> 23:00 EET (21:00 UTC), so 23:00-24:00 happens twice.

The DB tests tick `schedules.start_due_period` every minute, as beat would, against the real Postgres; the
others walk `next_run` / `due_period` over a whole year.
"""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select, update

from shared import schedules
from shared.models import Cycle, CycleState, Schedule

HOUR = timedelta(hours=1)
MINUTE = timedelta(minutes=1)


def utc(*fields: int) -> datetime:
    return datetime(*fields, tzinfo=UTC)


def hours(start: datetime, count: int, minute: int = 0) -> list[datetime]:
    """Every hour of real time from `start` (at `minute` past), `count` of them."""
    return [start.replace(minute=minute) + h * HOUR for h in range(count)]


def tick_through(session: Any, schedule: Schedule, start: datetime, end: datetime) -> list[datetime]:
    """Tick at 20 s past every minute from `start` to `end`, as beat would; each cycle started finishes
    before the next tick. The planned times (UTC) of the periods started, in order."""
    now = start + timedelta(seconds=20)
    while now < end:
        cycle_id = schedules.start_due_period(session, schedule, now)
        if cycle_id is not None:
            session.execute(update(Cycle).where(Cycle.id == cycle_id).values(state=CycleState.DONE))
        session.commit()
        now += MINUTE
    rows = session.execute(select(Cycle.period_key, Cycle.state).where(Cycle.schedule_id == schedule.id)).all()
    assert {state for _, state in rows} <= {CycleState.DONE}, rows  # nothing skipped or missed
    return sorted(schedules.period_of(key) for key, _ in rows)


# (case id, cron, zone, window start, window end, the planned times of the runs in the window, in UTC)
CASES = [
    # London, spring forward: 01:30 does not exist; read as 01:30 GMT it is 02:30 BST (01:30 UTC).
    ("london spring 01:30", "30 1 * * *", "Europe/London", utc(2026, 3, 28, 22), utc(2026, 3, 29, 6),
     [utc(2026, 3, 29, 1, 30)]),
    ("london spring 09:00", "0 9 * * *", "Europe/London", utc(2026, 3, 28, 20), utc(2026, 3, 29, 12),
     [utc(2026, 3, 29, 8)]),
    ("london spring hourly", "0 * * * *", "Europe/London", utc(2026, 3, 28, 22), utc(2026, 3, 29, 4),
     hours(utc(2026, 3, 28, 22), 6)),
    ("london spring hourly :30", "30 * * * *", "Europe/London", utc(2026, 3, 28, 22), utc(2026, 3, 29, 4),
     hours(utc(2026, 3, 28, 22), 6, minute=30)),
    # London, fall back: 01:30 happens at 00:30 UTC (BST) and 01:30 UTC (GMT); it runs at the first.
    ("london fall 01:30", "30 1 * * *", "Europe/London", utc(2026, 10, 24, 22), utc(2026, 10, 25, 6),
     [utc(2026, 10, 25, 0, 30)]),
    ("london fall 09:00", "0 9 * * *", "Europe/London", utc(2026, 10, 24, 20), utc(2026, 10, 25, 12),
     [utc(2026, 10, 25, 9)]),
    ("london fall hourly", "0 * * * *", "Europe/London", utc(2026, 10, 24, 22), utc(2026, 10, 25, 4),
     hours(utc(2026, 10, 24, 22), 6)),
    ("london fall hourly :30", "30 * * * *", "Europe/London", utc(2026, 10, 24, 22), utc(2026, 10, 25, 4),
     hours(utc(2026, 10, 24, 22), 6, minute=30)),
    # Cairo, spring forward: Friday 00:00-01:00 does not exist; 00:30 EET is 01:30 EEST (22:30 UTC Thursday).
    ("cairo spring 00:30", "30 0 * * *", "Africa/Cairo", utc(2025, 4, 24, 19), utc(2025, 4, 25, 3),
     [utc(2025, 4, 24, 22, 30)]),
    ("cairo spring midnight", "0 0 * * *", "Africa/Cairo", utc(2025, 4, 24, 19), utc(2025, 4, 25, 3),
     [utc(2025, 4, 24, 22)]),
    ("cairo spring 09:00", "0 9 * * *", "Africa/Cairo", utc(2025, 4, 24, 12), utc(2025, 4, 25, 12),
     [utc(2025, 4, 25, 6)]),
    ("cairo spring hourly", "0 * * * *", "Africa/Cairo", utc(2025, 4, 24, 19), utc(2025, 4, 25, 1),
     hours(utc(2025, 4, 24, 19), 6)),
    # Cairo, fall back: Thursday 23:30 happens at 20:30 UTC (EEST) and 21:30 UTC (EET); it runs at the first.
    ("cairo fall 23:30", "30 23 * * *", "Africa/Cairo", utc(2025, 10, 30, 18), utc(2025, 10, 31, 2),
     [utc(2025, 10, 30, 20, 30)]),
    ("cairo fall 09:00", "0 9 * * *", "Africa/Cairo", utc(2025, 10, 30, 3), utc(2025, 10, 31, 9),
     [utc(2025, 10, 30, 6), utc(2025, 10, 31, 7)]),
    ("cairo fall hourly", "0 * * * *", "Africa/Cairo", utc(2025, 10, 30, 18), utc(2025, 10, 31, 0),
     hours(utc(2025, 10, 30, 18), 6)),
]  # fmt: skip


@pytest.mark.parametrize(
    ("cron", "zone", "start", "end", "expected"), [case[1:] for case in CASES], ids=[case[0] for case in CASES]
)
def test_each_local_period_runs_once_at_the_rules_time(
    session: Any, cron: str, zone: str, start: datetime, end: datetime, expected: list[datetime]
) -> None:
    schedule = schedules.add_schedule(session, "dst", cron, "Reminder", timezone=zone)
    schedule.created_at = start  # no earlier period is due at the first tick
    session.commit()
    assert tick_through(session, schedule, start, end) == expected, "started"
    # At any moment, `next_run` (what `reach schedule list` shows) names the next of those runs, and `due_period`
    # (what a tick looks at) the last one: also between a wall time and its instant, across the change.
    for now in (start + n * MINUTE + timedelta(seconds=20) for n in range(int((end - start) / MINUTE))):
        following = [run for run in expected if run > now]
        if following:
            assert schedules.next_run(schedule, now) == following[0], f"next_run at {now}"
        assert schedules.due_period(schedule, now) == max((r for r in expected if r <= now), default=None), now


# -- without the database: a whole year of daily runs, and every hour around each change --------------------

ZONES = ["Europe/London", "Africa/Cairo", "America/New_York"]
#: 2025's daylight-saving changes, as UTC days (the test checks the zone's offset does change on each).
CHANGE_DAYS = {
    "Europe/London": [utc(2025, 3, 30), utc(2025, 10, 26)],
    "Africa/Cairo": [utc(2025, 4, 24), utc(2025, 10, 30)],
    "America/New_York": [utc(2025, 3, 9), utc(2025, 11, 2)],
}


def walk(cron: str, zone: str, start: datetime, end: datetime) -> list[datetime]:
    """Every run `next_run` names from `start` to `end`; `due_period` must agree with each."""
    schedule = Schedule(id=1, name="walk", cron=cron, timezone=zone, message="m", created_at=start - HOUR)
    runs = [schedules.next_run(schedule, start - timedelta(microseconds=1))]
    while runs[-1] < end:
        runs.append(schedules.next_run(schedule, runs[-1]))
    for earlier, later in pairwise(runs):
        assert schedules.due_period(schedule, later) == later
        assert schedules.due_period(schedule, later - timedelta(microseconds=1)) == earlier
    return runs[:-1]


@pytest.mark.parametrize("zone", ZONES)
@pytest.mark.parametrize("minute", [0, 30])
def test_an_hourly_schedule_runs_every_hour_of_real_time_across_each_change(zone: str, minute: int) -> None:
    for day in CHANGE_DAYS[zone]:
        start, end = day - timedelta(days=1), day + timedelta(days=2)
        assert start.astimezone(ZoneInfo(zone)).utcoffset() != end.astimezone(ZoneInfo(zone)).utcoffset()
        runs = walk(f"{minute} * * * *", zone, start, end)
        assert runs == hours(start, 72, minute=minute)


@pytest.mark.parametrize("zone", ZONES)
@pytest.mark.parametrize("at", ["0 0", "30 0", "0 1", "30 1", "30 2", "30 23"])
def test_a_daily_schedule_runs_once_each_local_day_all_year(zone: str, at: str) -> None:
    tz = ZoneInfo(zone)
    start, end = datetime(2025, 1, 1, tzinfo=tz), datetime(2026, 1, 1, tzinfo=tz)
    per_day = Counter(run.astimezone(tz).date() for run in walk(f"{at} * * *", zone, start, end))
    assert set(per_day.values()) == {1} and len(per_day) == 365, [d for d, n in per_day.items() if n != 1]
