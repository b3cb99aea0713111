"""`reach cycle`, `reach schedule` and `reach contacts list` through click's runner, against the real Postgres
and the test session's private Redis (the broker).

No worker runs here: tasks the CLI sends stay on the broker, where the tests count them and then delete
the lists they filled, so a worker started by a later module never picks up a stale nudge.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
import redis as redis_lib
from click.testing import CliRunner, Result
from sqlalchemy import func, select

from reach_cli.main import EXIT_NOT_FOUND, EXIT_UNREACHABLE, EXIT_USAGE, cli
from shared import cycles, schedules
from shared.models import Call, Contact, ContactStatus, Cycle, CycleState, Message, Schedule
from shared.settings import VAR_DIR, Settings, get_settings
from tests.conftest import TASK_LISTS, free_port
from worker.cycles import plan_cycle

#: How many contacts of each status `contacts` creates.
MIX = {
    ContactStatus.NEW: 3,
    ContactStatus.ACTIVE: 2,
    ContactStatus.INACTIVE: 2,
    ContactStatus.PENDING: 1,
    ContactStatus.OPTED_OUT: 1,
    ContactStatus.INVALID: 1,
}


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


@pytest.fixture
def broker_down(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """REDIS_URL points at a closed port for this test; the real settings come back afterwards."""
    monkeypatch.setenv("REDIS_URL", f"redis://127.0.0.1:{free_port()}/0")
    get_settings.cache_clear()
    yield
    monkeypatch.undo()
    get_settings.cache_clear()


@pytest.fixture
def contacts(session: Any) -> dict[ContactStatus, list[Contact]]:
    made: dict[ContactStatus, list[Contact]] = {}
    number = 0
    for status, count in MIX.items():
        for _ in range(count):
            number += 1
            made.setdefault(status, []).append(Contact(phone=f"+2547110{number:05d}", status=status))
    session.add_all([c for group in made.values() for c in group])
    session.commit()
    return made


def invoke(runner: CliRunner, *args: str) -> Result:
    return runner.invoke(cli, list(args), prog_name="reach", catch_exceptions=False)


def error_of(result: Result) -> str:
    """stderr of a failed command: one `error: ...` message and never a traceback."""
    assert result.stderr.startswith("error: "), result.stderr
    assert "Traceback" not in result.output + result.stderr
    return result.stderr


#: When a cycle paused for an account problem was planned: it pauses while dispatching, so after its plan.
PLANNED = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)


def make_cycle(session: Any, state: CycleState = CycleState.DONE, **fields: Any) -> int:
    cycle = Cycle(message="hello", state=state, created_at=datetime.now(UTC), **fields)
    session.add(cycle)
    session.commit()
    return cycle.id


def cycle_count(session: Any) -> int:
    return session.scalar(select(func.count()).select_from(Cycle))


# -- help ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "command",
    [
        [],
        ["cycle"],
        ["cycle", "run"],
        ["cycle", "show"],
        ["cycle", "watch"],
        ["cycle", "resume"],
        ["cycle", "cancel"],
        ["cycle", "pause"],
        ["cycle", "list"],
        ["schedule"],
        ["schedule", "add"],
        ["schedule", "list"],
        ["schedule", "remove"],
        ["contacts"],
        ["contacts", "list"],
        ["contacts", "import"],
        ["contacts", "show"],
        ["simulator"],
        ["db", "upgrade"],
        ["up"],
    ],
    ids=lambda c: " ".join(c) or "reach",
)
def test_help(runner: CliRunner, command: list[str]) -> None:
    result = invoke(runner, *command, "--help")
    assert result.exit_code == 0, result.output
    assert result.output.startswith(" ".join(["Usage: reach", *command, ""]))
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) > 2  # a description, not just the usage line


def test_groups_list_their_commands(runner: CliRunner) -> None:
    assert {"run", "show", "watch", "cancel", "pause", "resume", "list"} <= set(
        invoke(runner, "cycle", "--help").output.split()
    )
    assert {"add", "list", "remove"} <= set(invoke(runner, "schedule", "--help").output.split())
    assert {"import", "list", "show"} <= set(invoke(runner, "contacts", "--help").output.split())


# -- cycle run -----------------------------------------------------------------------------------------------


def test_dry_run_counts_and_sends_nothing(
    runner: CliRunner, session: Any, contacts: Any, task_lists: redis_lib.Redis
) -> None:
    result = invoke(runner, "cycle", "run", "--message", "Your bill is due", "--dry-run")

    assert result.exit_code == 0, result.output + result.stderr
    lines = {line.split(":")[0].strip(): line.split(":", 1)[1].strip() for line in result.output.splitlines()[1:]}
    assert lines["SMS"] == "5"  # 3 new + 2 active
    assert lines["voice calls"] == "3"  # 2 inactive + 1 pending
    assert lines["skipped"] == "2 (invalid 1, opted_out 1)"
    assert lines["estimated cost"] == "KES 13.00"  # 5 x 0.80 + 3 x 3.00
    assert lines["calls needed"] == "3 (inactive 2, pending 1), KES 9.00"  # issue 14
    assert "nothing was sent" in result.output
    assert cycle_count(session) == 0
    assert [task_lists.llen(name) for name in TASK_LISTS] == [0, 0]


def test_dry_run_json(runner: CliRunner, session: Any, contacts: Any) -> None:
    result = invoke(runner, "cycle", "run", "--message", "hi", "--dry-run", "--json")

    assert result.exit_code == 0, result.stderr
    assert json.loads(result.output) == {
        "dry_run": True,
        "sms": 5,
        "voice": 3,
        "skipped": 2,
        "skipped_by_status": {"opted_out": 1, "invalid": 1},
        "segments": {"encoding": "GSM-7", "parts": 1},
        "estimated_cost": {"currency": "KES", "amount": "13.00"},
        "calls": {
            "contacts": 3,
            "by_reason": {"inactive": 2, "pending": 1, "chose_voice": 0},
            "estimated_cost": {"currency": "KES", "amount": "9.00"},
        },
    }
    assert cycle_count(session) == 0


def test_run_starts_a_cycle_and_hands_plan_to_the_broker(
    runner: CliRunner, session: Any, contacts: Any, task_lists: redis_lib.Redis
) -> None:
    result = invoke(runner, "cycle", "run", "--message", "Your bill is due", "--voice-message", "Please pay")

    assert result.exit_code == 0, result.stderr
    cycle = session.scalars(select(Cycle)).one()
    assert (cycle.state, cycle.message, cycle.voice_message) == (CycleState.PLANNING, "Your bill is due", "Please pay")
    assert f"cycle {cycle.id} started" in result.output
    assert task_lists.llen("cycle") == 1
    task = json.loads(task_lists.lindex("cycle", 0))
    assert task["headers"]["task"] == "reach.cycle.plan"
    assert json.loads(task["headers"]["argsrepr"]) == [cycle.id]


def test_run_json_prints_the_id(runner: CliRunner, session: Any, task_lists: redis_lib.Redis) -> None:
    result = invoke(runner, "cycle", "run", "--message", "hi", "--json")

    assert result.exit_code == 0, result.stderr
    # stdout is the JSON alone (a note such as "no worker is running" goes to stderr)
    assert json.loads(result.stdout) == {"id": session.scalars(select(Cycle.id)).one(), "state": "planning"}
    assert task_lists.llen("cycle") == 1


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--message", ""], "message must not be empty"),
        (["--message", "   "], "message must not be empty"),
        (["--message", "x" * 1601], "message is too long (1601 characters; at most 1600)"),
        (["--message", "hi", "--voice-message", "x" * 1601], "voice message is too long"),
        (["--message", "Hi {nme}"], "message has an unknown placeholder {nme}"),
    ],
    ids=["empty", "blank", "too long", "voice too long", "unknown placeholder"],
)
@pytest.mark.parametrize("dry_run", [False, True], ids=["run", "dry run"])
def test_run_refuses_a_bad_message(
    runner: CliRunner, session: Any, task_lists: redis_lib.Redis, args: list[str], message: str, dry_run: bool
) -> None:
    result = invoke(runner, "cycle", "run", *args, *(["--dry-run"] if dry_run else []))

    assert result.exit_code == EXIT_USAGE  # bad input (the README's exit-code table), not "the operation failed"
    assert message in error_of(result)
    assert cycle_count(session) == 0
    assert task_lists.llen("cycle") == 0


def test_run_without_message_is_a_usage_error(runner: CliRunner) -> None:
    result = invoke(runner, "cycle", "run")
    assert result.exit_code == 2
    assert "--message" in result.stderr


def test_run_with_broker_down_keeps_the_cycle_and_exits_3(runner: CliRunner, session: Any, broker_down: None) -> None:
    result = invoke(runner, "cycle", "run", "--message", "hi")

    assert result.exit_code == 3
    error = error_of(result)
    cycle = session.scalars(select(Cycle)).one()
    assert cycle.state is CycleState.PLANNING
    assert "broker (REDIS_URL) is unreachable" in error
    assert f"cycle {cycle.id} is recorded" in error
    assert "within about 2 minutes" in error


def test_without_redis_url_the_embedded_broker_under_var_is_used(settings: Settings) -> None:
    from shared.broker import celery_config

    assert celery_config(settings)["broker_url"] == settings.redis_url
    unset = settings.model_copy(update={"redis_url": ""})
    assert celery_config(unset)["broker_url"] == f"sqla+sqlite:///{VAR_DIR / 'broker.sqlite3'}"


# -- cycle show / list / watch -------------------------------------------------------------------------------


def test_show_a_planned_cycle(runner: CliRunner, session: Any, contacts: Any) -> None:
    cycle_id = cycles.start_cycle(session, "Your bill is due")
    session.commit()
    plan_cycle(session, cycle_id)
    session.commit()
    new, inactive = contacts[ContactStatus.NEW], contacts[ContactStatus.INACTIVE]
    session.add_all([
        Message(contact_id=new[0].id, phone=new[0].phone, text="t", cycle_id=cycle_id, send_state="sent",
                status="Success", cost=Decimal("0.80"), currency="KES"),
        Message(contact_id=new[1].id, phone=new[1].phone, text="t", cycle_id=cycle_id, send_state="sent",
                status="Failed", failure_reason="AbsentSubscriber", cost=Decimal("0.80"), currency="KES"),
        Call(contact_id=inactive[0].id, phone=inactive[0].phone, cycle_id=cycle_id, send_state="sent",
             outcome="answered", acknowledged=True, ended_at=datetime.now(UTC), amount=Decimal("2.50"), currency="KES"),
        Call(contact_id=inactive[1].id, phone=inactive[1].phone, cycle_id=cycle_id, send_state="sent",
             outcome="retry_later", hangup_cause="NO_ANSWER", ended_at=datetime.now(UTC)),
    ])  # fmt: skip
    session.commit()

    result = invoke(runner, "cycle", "show", str(cycle_id))

    assert result.exit_code == 0, result.stderr
    out = result.output
    assert out.startswith(f"cycle {cycle_id}: dispatching\n")
    assert "SMS        sent 2, delivered 1, failed 1" in out
    assert "failed by reason: AbsentSubscriber 1" in out
    assert "items: pending 5" in out
    assert "voice      called 2, answered 1, acknowledged 1, not answered 1" in out
    assert "not answered by cause: NO_ANSWER 1" in out
    assert "items: pending 3" in out
    assert "planned    SMS 5, voice 3" in out
    assert "skipped    2 (invalid 1, opted_out 1)" in out
    assert "cost       KES 4.10" in out
    assert "paused:" not in out


def test_show_json_is_the_report(runner: CliRunner, session: Any, contacts: Any) -> None:
    cycle_id = cycles.start_cycle(session, "hi")
    session.commit()
    plan_cycle(session, cycle_id)
    session.commit()

    result = invoke(runner, "cycle", "show", str(cycle_id), "--json")

    assert result.exit_code == 0, result.stderr
    doc = json.loads(result.output)
    assert doc == json.loads(json.dumps(cycles.report(session, cycle_id)))
    assert (doc["state"], doc["sms_detail"]["items"]["pending"], doc["voice_detail"]["items"]["pending"]) == (
        "dispatching",
        5,
        3,
    )
    assert (doc["sms"], doc["voice"], doc["skipped"]) == (5, 3, 2)
    assert doc["skipped_by_status"] == {"opted_out": 1, "invalid": 1}


def test_show_a_paused_cycle_says_why(runner: CliRunner, session: Any) -> None:
    cycle_id = make_cycle(session, CycleState.PAUSED, paused_reason="InsufficientBalance")

    result = invoke(runner, "cycle", "show", str(cycle_id))

    assert result.exit_code == 0, result.stderr
    assert f"cycle {cycle_id}: paused" in result.output
    assert f"paused:    InsufficientBalance (after fixing it: reach cycle resume {cycle_id})" in result.output


@pytest.mark.parametrize("command", ["show", "watch", "resume", "cancel", "pause"])
def test_unknown_cycle_exits_4(runner: CliRunner, session: Any, task_lists: redis_lib.Redis, command: str) -> None:
    result = invoke(runner, "cycle", command, "999")
    assert result.exit_code == EXIT_NOT_FOUND == 4
    assert error_of(result) == "error: no cycle 999\n"
    assert task_lists.llen("send") == 0


def test_show_needs_a_number(runner: CliRunner) -> None:
    result = invoke(runner, "cycle", "show", "seven")
    assert result.exit_code == 2
    assert "'seven' is not a valid integer" in result.stderr


@pytest.mark.parametrize(("state", "code"), [(CycleState.DONE, 0), (CycleState.FAILED, 1), (CycleState.CANCELLED, 1)])
def test_watch_returns_when_the_cycle_has_ended(runner: CliRunner, session: Any, state: CycleState, code: int) -> None:
    cycle_id = make_cycle(session, state, plan={"sms": 0, "voice": 0, "skipped": {}})

    result = invoke(runner, "cycle", "watch", str(cycle_id), "--interval", "0.1")

    assert result.exit_code == code
    [line] = result.output.splitlines()
    assert f"cycle {cycle_id} {state.value}: SMS 0 sent, 0 delivered, 0 failed;" in line
    assert line.endswith("0 to go")


def test_list_cycles_newest_first(runner: CliRunner, session: Any) -> None:
    assert "no cycles yet" in invoke(runner, "cycle", "list").output
    older = make_cycle(session, plan={"sms": 4, "voice": 2, "skipped": {"opted_out": 1, "invalid": 0}})
    paused = make_cycle(session, CycleState.PAUSED, paused_reason="InsufficientBalance")
    newest = make_cycle(session, CycleState.PLANNING)

    result = invoke(runner, "cycle", "list")

    assert result.exit_code == 0, result.stderr
    header, *rows = result.output.splitlines()
    assert header.split() == ["id", "state", "created", "(UTC)", "sms", "voice", "skipped", "schedule"]
    assert [int(row.split()[0]) for row in rows] == [newest, paused, older]
    assert "paused (InsufficientBalance)" in rows[1]
    assert rows[2].split()[-5:] == ["4", "2", "opted_out", "1", "-"]
    latest = json.loads(invoke(runner, "cycle", "list", "--limit", "2", "--json").output)["cycles"]
    assert [c["id"] for c in latest] == [newest, paused]


# -- cycle resume ----------------------------------------------------------------------------------------------


def test_resume_a_paused_cycle(runner: CliRunner, session: Any, task_lists: redis_lib.Redis) -> None:
    cycle_id = make_cycle(session, CycleState.PAUSED, paused_reason="InsufficientBalance", planned_at=PLANNED)

    result = invoke(runner, "cycle", "resume", str(cycle_id))

    assert result.exit_code == 0, result.stderr
    assert f"cycle {cycle_id} resumed" in result.output
    session.expire_all()
    cycle = session.get(Cycle, cycle_id)
    assert (cycle.state, cycle.paused_reason) == (CycleState.DISPATCHING, None)
    tasks = [json.loads(raw)["headers"] for raw in task_lists.lrange("send", 0, -1)]
    assert sorted(t["task"] for t in tasks) == ["reach.cycle.dispatch_calls", "reach.cycle.dispatch_sms"]
    assert all(json.loads(t["argsrepr"]) == [cycle_id] for t in tasks)
    assert task_lists.llen("cycle") == 0


def test_resume_a_cycle_that_is_not_paused_exits_1(
    runner: CliRunner, session: Any, task_lists: redis_lib.Redis
) -> None:
    cycle_id = make_cycle(session, CycleState.DONE)

    result = invoke(runner, "cycle", "resume", str(cycle_id))

    assert result.exit_code == 1
    assert error_of(result) == f"error: cycle {cycle_id} is done, not paused\n"
    assert task_lists.llen("send") == 0
    session.expire_all()
    assert session.get(Cycle, cycle_id).state is CycleState.DONE


def test_resume_with_broker_down_exits_3(runner: CliRunner, session: Any, broker_down: None) -> None:
    cycle_id = make_cycle(session, CycleState.PAUSED, paused_reason="InsufficientBalance", planned_at=PLANNED)

    result = invoke(runner, "cycle", "resume", str(cycle_id))

    assert result.exit_code == 3
    assert "unreachable" in error_of(result)
    session.expire_all()
    assert session.get(Cycle, cycle_id).state is CycleState.DISPATCHING


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


# -- contacts list -------------------------------------------------------------------------------------------


def test_contacts_list_by_status(runner: CliRunner, contacts: dict[ContactStatus, list[Contact]]) -> None:
    result = invoke(runner, "contacts", "list", "--status", "inactive")

    assert result.exit_code == 0, result.stderr
    header, *rows, summary = result.output.splitlines()
    assert header.split()[:3] == ["phone", "status", "name"]
    assert [row.split()[0] for row in rows] == [c.phone for c in contacts[ContactStatus.INACTIVE]]
    assert all(row.split()[1] == "inactive" for row in rows)
    assert summary == "2 contacts inactive"

    everyone = invoke(runner, "contacts", "list", "--limit", "4")
    assert everyone.output.splitlines()[-1] == "10 contacts; the first 4 shown (--limit)"
    assert len(everyone.output.splitlines()) == 6

    doc = json.loads(invoke(runner, "contacts", "list", "--status", "opted_out", "--json").output)
    assert doc["total"] == 1
    assert [c["phone"] for c in doc["contacts"]] == [contacts[ContactStatus.OPTED_OUT][0].phone]


def test_contacts_list_refuses_an_unknown_status(runner: CliRunner) -> None:
    result = invoke(runner, "contacts", "list", "--status", "happy")
    assert result.exit_code == 2
    assert "'happy' is not one of 'new', 'pending', 'active', 'inactive', 'opted_out', 'invalid'" in result.stderr


# -- exit codes ------------------------------------------------------------------------------------------------


def test_top_level_help_documents_the_exit_codes(runner: CliRunner) -> None:
    out = " ".join(invoke(runner, "--help").output.split())
    assert (
        "Exit codes: 0 done, 1 failed, 2 bad usage or settings, 3 database or broker unreachable, 4 not found." in out
    )


@pytest.fixture
def database_down(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """DATABASE_URL points at a closed port for this test; the real settings come back afterwards."""
    from tests.conftest import _reset_caches

    monkeypatch.setenv("DATABASE_URL", f"postgresql://postgres@127.0.0.1:{free_port()}/reach")
    _reset_caches()
    yield
    monkeypatch.undo()
    _reset_caches()


@pytest.mark.parametrize(
    "args",
    [
        ["contacts", "list"],
        ["contacts", "show", "+254711000001"],
        ["contacts", "import", "CSV"],
        ["cycle", "show", "1"],
        ["cycle", "list"],
        ["schedule", "list"],
        ["db", "upgrade"],
    ],
    ids=" ".join,
)
def test_database_down_exits_3_without_a_traceback(
    runner: CliRunner, database_down: None, tmp_path: Any, args: list[str]
) -> None:
    csv_file = tmp_path / "contacts.csv"
    csv_file.write_text("phone\n+254711000001\n")
    result = invoke(runner, *[str(csv_file) if a == "CSV" else a for a in args])

    assert result.exit_code == EXIT_UNREACHABLE
    assert "database unreachable" in error_of(result)


# -- contacts import -----------------------------------------------------------------------------------------


def test_contacts_import_adds_updates_and_writes_refused_rows_with_reasons(
    runner: CliRunner, session: Any, tmp_path: Any
) -> None:
    session.add(Contact(phone="+254711000001", name="Old name", status=ContactStatus.ACTIVE))
    session.commit()
    source = tmp_path / "contacts.csv"
    source.write_text("phone,name\n+254711000001,Amina\n0711000002,Brian\n254711000003,\nhello,Bad\n0711000002,Again\n")

    result = invoke(runner, "contacts", "import", str(source))

    assert result.exit_code == 0, result.stderr
    summary, where = result.stdout.splitlines()
    assert summary.startswith("5 rows: 2 added, 1 updated, 2 refused (")
    refused = tmp_path / "contacts.refused.csv"
    assert where == f"refused rows and why: {refused}"
    assert list(csv.reader(refused.read_text().splitlines())) == [
        ["row", "phone", "reason"],
        ["4", "hello", "not a phone number (it has letters in it)"],
        ["5", "+254711000002", "duplicate of row 2"],
    ]
    session.expire_all()
    found = {c.phone: (c.name, c.status) for c in session.scalars(select(Contact))}
    assert found == {
        "+254711000001": ("Amina", ContactStatus.ACTIVE),  # an import never resets a status
        "+254711000002": ("Brian", ContactStatus.NEW),
        "+254711000003": (None, ContactStatus.NEW),
    }


def test_contacts_import_refused_file_option(runner: CliRunner, session: Any, tmp_path: Any) -> None:
    source, target = tmp_path / "in.csv", tmp_path / "why.csv"
    source.write_text("phone\n12\n")
    result = invoke(runner, "contacts", "import", str(source), "--refused", str(target))
    assert result.exit_code == 0
    [header, row] = csv.reader(target.read_text().splitlines())
    assert (header, row[:2]) == (["row", "phone", "reason"], ["1", "12"])
    assert not (tmp_path / "in.refused.csv").exists()


def test_contacts_import_without_a_phone_column_exits_2(runner: CliRunner, session: Any, tmp_path: Any) -> None:
    source = tmp_path / "contacts.csv"
    source.write_text("number,name\n+254711000001,Amina\n")
    result = invoke(runner, "contacts", "import", str(source))
    assert result.exit_code == EXIT_USAGE
    assert "needs a header row with a 'phone' column" in error_of(result)


def test_import_reports_progress_chunk_by_chunk(session: Any) -> None:
    from shared.imports import IMPORT_CHUNK, import_contacts

    rows = [{"phone": f"+2547110{i:05d}"} for i in range(2 * IMPORT_CHUNK + 500)]
    steps: list[int] = []
    report = import_contacts(session, rows, "KE", progress=steps.append)
    session.commit()

    assert steps == [IMPORT_CHUNK, IMPORT_CHUNK, 500]
    assert (report.created, report.updated, report.refused) == (len(rows), 0, [])
    assert session.scalar(select(func.count()).select_from(Contact)) == len(rows)


# -- contacts show -------------------------------------------------------------------------------------------


@pytest.fixture
def contact_with_history(session: Any) -> Contact:
    contact = Contact(
        phone="+254711000001", name="Amina", status=ContactStatus.INACTIVE, last_sms_status="Failed",
        last_failure_reason="AbsentSubscriber", last_hangup_cause="NO_ANSWER",
    )  # fmt: skip
    session.add(contact)
    session.flush()
    cycle_id = make_cycle(session)
    sent_at = datetime(2026, 11, 20, 9, 0, 5, tzinfo=UTC)
    session.add_all([
        Message(contact_id=contact.id, phone=contact.phone, text="Bill", cycle_id=cycle_id, send_state="sent",
                status="Failed", failure_reason="AbsentSubscriber", cost=Decimal("0.8000"), currency="KES",
                created_at=sent_at, status_at=sent_at.replace(minute=3)),
        Call(contact_id=contact.id, phone=contact.phone, cycle_id=cycle_id, send_state="sent", status="Aborted",
             outcome="retry_later", hangup_cause="NO_ANSWER", created_at=sent_at.replace(hour=10),
             ended_at=sent_at.replace(hour=10, minute=1)),
        Call(contact_id=contact.id, phone=contact.phone, cycle_id=cycle_id, send_state="sent", status="Success",
             outcome="answered", acknowledged=True, duration_seconds=14, amount=Decimal("2.5000"), currency="KES",
             created_at=sent_at.replace(hour=11), ended_at=sent_at.replace(hour=11, minute=1)),
    ])  # fmt: skip
    session.commit()
    contact.messages_cycle_id = cycle_id  # type: ignore[attr-defined]  (for the assertions)
    return contact


def test_contacts_show_prints_the_contact_and_its_history(runner: CliRunner, contact_with_history: Contact) -> None:
    result = invoke(runner, "contacts", "show", "0711000001")

    assert result.exit_code == 0, result.stderr
    out = result.output
    assert "phone: +254711000001" in out
    assert "status: inactive" in out
    sms = out.split("SMS (1 latest")[1].split("Calls (")[0].splitlines()
    assert sms[1].split()[:2] == ["sent", "cycle"]
    cycle_id = str(contact_with_history.messages_cycle_id)
    assert sms[2].split() == ["2026-11-20", "09:00:05", cycle_id, "sent", "Failed", "AbsentSubscriber",
                              "2026-11-20", "09:03:05", "KES", "0.8000"]  # fmt: skip
    calls = out.split("Calls (2 latest, newest first; times UTC)")[1].splitlines()
    answered, unanswered = calls[2].split(), calls[3].split()
    assert answered[:2] == ["2026-11-20", "11:00:05"]
    assert answered[3:7] == ["Success", "answered", "-", "yes"]
    assert answered[-2:] == ["KES", "2.5000"]
    assert unanswered[3:7] == ["Aborted", "retry_later", "NO_ANSWER", "no"]


def test_contacts_show_json_is_the_operator_apis_answer(
    runner: CliRunner, contact_with_history: Contact, client: Any, operator_headers: dict[str, str]
) -> None:
    result = invoke(runner, "contacts", "show", "+254711000001", "--json")

    assert result.exit_code == 0, result.stderr
    doc = json.loads(result.output)
    assert doc == client.get("/api/contacts/+254711000001", headers=operator_headers).json
    assert [m["failure_reason"] for m in doc["messages"]] == ["AbsentSubscriber"]
    assert [(c["hangup_cause"], c["amount"]) for c in doc["calls"]] == [(None, "2.5000"), ("NO_ANSWER", None)]


def test_contacts_show_unknown_exits_4_and_bad_number_exits_2(runner: CliRunner, session: Any) -> None:
    unknown = invoke(runner, "contacts", "show", "+254711999999")
    assert unknown.exit_code == EXIT_NOT_FOUND
    assert error_of(unknown) == "error: no contact +254711999999\n"
    bad = invoke(runner, "contacts", "show", "hello")
    assert bad.exit_code == EXIT_USAGE
    assert "bad phone number 'hello'" in error_of(bad)


# -- simulator -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "message"),
    [("{not json", "Expecting property name"), ('{"numbers": {"+254711000001": {"colour": 1}}}', "unknown field")],
    ids=["not json", "unknown field"],
)
def test_simulator_refuses_a_bad_scenario_with_exit_2(
    runner: CliRunner, tmp_path: Any, content: str, message: str
) -> None:
    scenario = tmp_path / "scenario.json"
    scenario.write_text(content)
    result = invoke(runner, "simulator", "--scenario", str(scenario))
    assert result.exit_code == EXIT_USAGE
    assert message in error_of(result)
    assert f"bad scenario {scenario}" in result.stderr


def test_simulator_runs_a_scenario_file(tmp_path: Any) -> None:
    """`reach simulator --scenario FILE` as a process: the file's rule decides AT's answer."""
    import subprocess
    import sys

    import requests

    from tests.conftest import wait_for

    scenario = tmp_path / "scenario.json"
    scenario.write_text(json.dumps({"numbers": {"+254711000002": {"send_status": 403}}}))
    port = free_port()
    command = [sys.executable, "-m", "reach_cli.main", "simulator", "--scenario", str(scenario), "--port", str(port),
               "--api-key", "cli-sim-key", "--callback-url", f"http://127.0.0.1:{free_port()}"]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        url = f"http://127.0.0.1:{port}/version1/messaging"
        form = {"username": "sandbox", "to": "+254711000001,+254711000002", "message": "hi"}
        headers = {"apiKey": "cli-sim-key", "Accept": "application/json"}

        def answer() -> Any:
            try:
                return requests.post(url, data=form, headers=headers, timeout=2)
            except requests.ConnectionError:
                return None

        response = wait_for(answer, timeout=30, what="the simulator answering")
        recipients = {r["number"]: r["statusCode"] for r in response.json()["SMSMessageData"]["Recipients"]}
        assert recipients == {"+254711000001": 101, "+254711000002": 403}
    finally:
        process.terminate()
        process.wait(10)


# -- cycle cancel and pause -----------------------------------------------------------------------------------


def planned(session: Any, contacts: dict[ContactStatus, list[Contact]]) -> int:
    """A cycle over `contacts`, planned: 5 SMS and 3 calls pending."""
    cycle_id = cycles.start_cycle(session, "hello")
    plan_cycle(session, cycle_id)
    session.commit()
    return cycle_id


def test_cancel_a_running_cycle(runner: CliRunner, session: Any, contacts: Any, task_lists: redis_lib.Redis) -> None:
    cycle_id = planned(session, contacts)

    result = invoke(runner, "cycle", "cancel", str(cycle_id))

    assert result.exit_code == 0, result.stderr
    assert result.output == f"cycle {cycle_id} cancelled: 8 items will not be sent\n"
    session.expire_all()
    assert session.get(Cycle, cycle_id).state is CycleState.CANCELLED
    assert cycles.report(session, cycle_id)["cancelled"] == 8
    assert task_lists.llen("send") == task_lists.llen("cycle") == 0


def test_pause_then_resume_a_running_cycle(
    runner: CliRunner, session: Any, contacts: Any, task_lists: redis_lib.Redis
) -> None:
    cycle_id = planned(session, contacts)

    paused = invoke(runner, "cycle", "pause", str(cycle_id))

    assert paused.exit_code == 0, paused.stderr
    assert paused.output == f"cycle {cycle_id} paused; let it go again with: reach cycle resume {cycle_id}\n"
    session.expire_all()
    cycle = session.get(Cycle, cycle_id)
    assert (cycle.state, cycle.paused_by.value) == (CycleState.PAUSED, "operator")
    assert task_lists.llen("send") == 0
    assert "paused:    paused by the operator" in invoke(runner, "cycle", "show", str(cycle_id)).output

    resumed = invoke(runner, "cycle", "resume", str(cycle_id))

    assert resumed.exit_code == 0, resumed.stderr
    assert task_lists.llen("send") == 2  # both dispatchers nudged


@pytest.mark.parametrize(
    ("command", "state", "says"),
    [
        ("cancel", CycleState.DONE, "is done: there is nothing left to cancel"),
        ("cancel", CycleState.CANCELLED, "is cancelled: there is nothing left to cancel"),
        ("pause", CycleState.DONE, "is done: there is nothing left to pause"),
        ("pause", CycleState.CANCELLED, "is cancelled: there is nothing left to pause"),
    ],
)
def test_a_finished_cycle_cannot_be_cancelled_or_paused_exit_1(
    runner: CliRunner, session: Any, command: str, state: CycleState, says: str
) -> None:
    cycle_id = make_cycle(session, state)

    result = invoke(runner, "cycle", command, str(cycle_id))

    assert result.exit_code == 1
    assert error_of(result) == f"error: cycle {cycle_id} {says}\n"
    session.expire_all()
    assert session.get(Cycle, cycle_id).state is state
