"""`reach schedule` through click's runner, against the real Postgres."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from click.testing import CliRunner
from sqlalchemy import select

from reach_cli.main import EXIT_NOT_FOUND, EXIT_USAGE
from shared import schedules
from shared.models import CycleState, Schedule
from shared.settings import get_settings
from tests.cli_support import error_of, invoke, make_cycle

# -- schedules -----------------------------------------------------------------------------------------------


def test_schedule_add_list_remove(runner: CliRunner, session: Any) -> None:
    assert "no schedules" in invoke(runner, "schedule", "list").output
    added = invoke(
        runner, "schedule", "add", "weekly", "--cron", "0 9 * * 1", "--message", "Bill due",
        "--voice-message", "Your bill is due", "--timezone", "Africa/Nairobi",
    )  # fmt: skip
    assert added.exit_code == 0, added.stderr
    schedule = session.scalars(select(Schedule)).one()
    assert (schedule.name, schedule.cron, schedule.timezone) == ("weekly", "0 9 * * 1", "Africa/Nairobi")
    assert schedule.voice_message == "Your bill is due"
    assert added.output.startswith(f"schedule {schedule.id} 'weekly' added: 0 9 * * 1 (Africa/Nairobi); next run ")
    assert invoke(runner, "schedule", "add", "daily", "--cron", "30 7 * * *", "--message", "Hi").exit_code == 0

    listed = invoke(runner, "schedule", "list")
    assert listed.exit_code == 0
    header, *rows = listed.output.splitlines()
    assert header.split() == ["id", "name", "cron", "timezone", "enabled", "next_run", "last_skip", "message"]
    assert [row.split()[1] for row in rows] == ["weekly", "daily"]
    docs = json.loads(invoke(runner, "schedule", "list", "--json").output)["schedules"]
    weekly = docs[0]
    assert (weekly["name"], weekly["enabled"]) == ("weekly", True)
    next_run = datetime.fromisoformat(weekly["next_run"])
    assert next_run > datetime.now(UTC)
    assert (next_run.weekday(), next_run.hour, next_run.minute) == (0, 6, 0)  # 09:00 in Nairobi is 06:00 UTC
    assert weekly["next_run"] in rows[0]

    assert invoke(runner, "schedule", "remove", "weekly").output == "schedule 'weekly' removed\n"
    daily_id = str(docs[1]["id"])
    assert invoke(runner, "schedule", "remove", daily_id).exit_code == 0
    session.expire_all()
    assert session.scalars(select(Schedule)).all() == []


def test_schedule_list_and_cycle_show_tell_a_skipped_period(runner: CliRunner, session: Any) -> None:
    assert invoke(runner, "schedule", "add", "hourly", "--cron", "0 * * * *", "--message", "News").exit_code == 0
    schedule = session.scalars(select(Schedule)).one()
    nine = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
    first = make_cycle(
        session, CycleState.DISPATCHING, schedule_id=schedule.id, period_key=schedules.period_key(schedule, nine)
    )
    reason = f"cycle {first} of this schedule is still dispatching"
    skipped = make_cycle(
        session,
        CycleState.SKIPPED,
        schedule_id=schedule.id,
        period_key=schedules.period_key(schedule, nine.replace(hour=10)),
        skip_reason=reason,
    )

    header, row = invoke(runner, "schedule", "list").output.splitlines()
    assert row[header.index("last_skip") :].split()[0] == "2026-12-01T10:00:00+00:00"
    (doc,) = json.loads(invoke(runner, "schedule", "list", "--json").output)["schedules"]
    assert doc["last_skip"]["reason"] == reason and doc["last_skip"]["cycle_id"] == skipped
    shown = invoke(runner, "cycle", "show", str(skipped))
    assert shown.output.splitlines()[:2] == [f"cycle {skipped}: skipped", f"  skipped:   {reason}"]
    watched = invoke(runner, "cycle", "watch", str(skipped), "--interval", "0.1")
    assert watched.exit_code == 1  # it ends: nothing was or will be sent for that period


def test_schedule_list_marks_a_missed_period(runner: CliRunner, session: Any) -> None:
    assert invoke(runner, "schedule", "add", "daily", "--cron", "0 9 * * *", "--message", "News").exit_code == 0
    schedule = session.scalars(select(Schedule)).one()
    nine = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
    reason = schedules.missed_reason(timedelta(hours=14, minutes=30), timedelta(hours=1))
    key = schedules.period_key(schedule, nine)
    missed = make_cycle(session, CycleState.SKIPPED, schedule_id=schedule.id, period_key=key, skip_reason=reason)

    header, row = invoke(runner, "schedule", "list").output.splitlines()
    assert row[header.index("last_skip") :].split()[:2] == ["2026-12-01T09:00:00+00:00", "(missed)"]
    shown = invoke(runner, "cycle", "show", str(missed))
    assert shown.output.splitlines()[1] == (
        "  skipped:   missed: its first tick came 14 hours 30 minutes after its time, later than "
        "SCHEDULE_MISFIRE_SECONDS (1 hour)"
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--cron", "every monday"], "bad cron expression 'every monday'"),
        (["--cron", "0 9 * *"], "bad cron expression '0 9 * *'"),
        (["--cron", "61 9 * * *"], "bad cron expression"),
        (["--cron", "0 9 * * 1", "--timezone", "Mars/Olympus"], "unknown time zone 'Mars/Olympus'"),
        (["--cron", "0 9 * * 1", "--message", ""], "message must not be empty"),
        (["--cron", "0 0 30 2 *"], "cron '0 0 30 2 *' never fires"),
        (["--cron", "*/30 * * * *"], "fires twice within 30 minutes"),
        (["--cron", "0 9 * * 1", "--", ""], "name must not be empty"),
        (["--cron", "0 9 * * 1", "--", "n" * 101], "name is too long (101 characters; at most 100)"),
    ],
    ids=[
        "words",
        "four fields",
        "minute 61",
        "time zone",
        "empty message",
        "30 February",
        "too often",
        "empty name",
        "long name",
    ],
)
def test_schedule_add_refuses_bad_input(
    runner: CliRunner, session: Any, monkeypatch: pytest.MonkeyPatch, args: list[str], message: str
) -> None:
    if "--message" not in args:
        args = ["--message", "hi", *args]
    if "--" not in args:
        args = [*args, "weekly"]
    monkeypatch.setenv("SCHEDULE_MIN_INTERVAL_SECONDS", "3600")  # the test session allows every minute
    get_settings.cache_clear()
    try:
        result = invoke(runner, "schedule", "add", *args)
    finally:
        get_settings.cache_clear()

    assert result.exit_code == EXIT_USAGE
    assert message in error_of(result)
    assert session.scalars(select(Schedule)).all() == []


def test_schedule_names_are_unique(runner: CliRunner, session: Any) -> None:
    assert invoke(runner, "schedule", "add", "weekly", "--cron", "0 9 * * 1", "--message", "a").exit_code == 0
    result = invoke(runner, "schedule", "add", "weekly", "--cron", "0 8 * * 1", "--message", "b")
    assert result.exit_code == 1
    assert "a schedule named 'weekly' exists already" in error_of(result)


@pytest.mark.parametrize("key", ["nightly", "12345"])
def test_schedule_remove_unknown_exits_4(runner: CliRunner, session: Any, key: str) -> None:
    result = invoke(runner, "schedule", "remove", key)
    assert result.exit_code == EXIT_NOT_FOUND
    assert error_of(result) == f"error: no schedule {key!r}\n"
