"""`reach cycle` through click's runner, against the real Postgres and the test session's private Redis (the
broker).

No worker runs here: tasks the CLI sends stay on the broker, where the tests count them and then delete
the lists they filled, so a worker started by a later module never picks up a stale nudge.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
import redis as redis_lib
from click.testing import CliRunner
from sqlalchemy import select

from reach_cli.main import EXIT_NOT_FOUND, EXIT_USAGE
from shared import cycle_report, cycles
from shared.models import Call, Contact, ContactStatus, Cycle, CycleState, Message
from shared.settings import VAR_DIR, Settings
from tests.cli_support import PLANNED, cycle_count, error_of, invoke, make_cycle
from tests.conftest import TASK_LISTS
from worker.cycles import plan_cycle

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
    assert doc == json.loads(json.dumps(cycle_report.report(session, cycle_id)))
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
    assert cycle_report.report(session, cycle_id)["cancelled"] == 8
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
