"""Starting a cycle twice by accident (issue 13): `Idempotency-Key` on `POST /api/cycles` (as Stripe does) and
the key `reach cycle run` sends, against the real database; and the answer saying when no worker runs."""

from __future__ import annotations

from typing import Any

import pytest
from click.testing import CliRunner
from sqlalchemy import func, select

from reach_cli.main import EXIT_USAGE, cli
from shared.heartbeat import NO_WORKER
from shared.models import Cycle


def cycle_count(session: Any) -> int:
    session.expire_all()
    return session.scalar(select(func.count()).select_from(Cycle))


def post(client: Any, headers: dict[str, str], key: str | None, **doc: Any) -> Any:
    extra = {"Idempotency-Key": key} if key is not None else {}
    return client.post("/api/cycles", json=doc, headers={**headers, **extra})


def test_the_same_key_answers_the_first_cycle_and_starts_nothing_new(client, session, operator_headers) -> None:
    first = post(client, operator_headers, "order-42", message="hello")
    again = post(client, operator_headers, "order-42", message="hello")

    assert first.status_code == 202, first.get_json()
    assert again.status_code == 202, again.get_json()
    assert again.get_json()["id"] == first.get_json()["id"]
    assert again.headers.get("Idempotent-Replayed") == "true"
    assert cycle_count(session) == 1


def test_the_same_key_for_a_different_request_is_a_409_naming_it(client, session, operator_headers) -> None:
    assert post(client, operator_headers, "order-43", message="hello").status_code == 202

    other = post(client, operator_headers, "order-43", message="goodbye")

    assert other.status_code == 409, other.get_json()
    assert "order-43" in other.get_json()["error"]
    assert cycle_count(session) == 1


def test_without_a_key_every_request_is_a_new_cycle(client, session, operator_headers) -> None:
    assert post(client, operator_headers, None, message="hello").status_code == 202
    assert post(client, operator_headers, None, message="hello").status_code == 202
    assert cycle_count(session) == 2


def test_a_bad_key_is_a_400(client, session, operator_headers) -> None:
    answer = post(client, operator_headers, "x" * 256, message="hello")
    assert answer.status_code == 400, answer.get_json()
    assert "Idempotency-Key" in answer.get_json()["error"]
    assert cycle_count(session) == 0


@pytest.fixture
def no_worker_beat(app: Any) -> None:
    """Forget the heartbeat of a worker an earlier module of this pytest process may have left running (it beats
    again only every BEAT_SECONDS, long after the test is done)."""
    from shared.heartbeat import KEY

    app.extensions["reach"].store.unmark(KEY)


def test_a_cycle_started_while_no_worker_runs_says_so(client, session, operator_headers, no_worker_beat) -> None:
    answer = post(client, operator_headers, None, message="hello")
    assert answer.status_code == 202
    assert answer.get_json()["warning"] == NO_WORKER


def test_a_cycle_started_while_a_worker_runs_says_nothing_of_it(client, session, operator_headers, app) -> None:
    from shared.heartbeat import beat_once

    beat_once(app.extensions["reach"].store)
    answer = post(client, operator_headers, None, message="hello")
    assert answer.status_code == 202
    assert "warning" not in answer.get_json(), answer.get_json()


def test_cli_run_with_the_same_key_starts_one_cycle(session) -> None:
    runner = CliRunner()
    args = ["cycle", "run", "--message", "hello", "--idempotency-key", "nightly-2026-12-06"]
    first, again = runner.invoke(cli, args), runner.invoke(cli, args)

    assert first.exit_code == 0, first.output
    assert again.exit_code == 0, again.output
    assert cycle_count(session) == 1
    assert "cycle 1 " in again.output or "already started" in again.output
    other = runner.invoke(cli, ["cycle", "run", "--message", "bye", "--idempotency-key", "nightly-2026-12-06"])
    assert other.exit_code == EXIT_USAGE
    assert cycle_count(session) == 1


def test_a_running_worker_beats_so_its_cycles_carry_no_warning(worker, client, session, operator_headers, app) -> None:
    from shared.heartbeat import worker_alive
    from tests.conftest import wait_for

    wait_for(lambda: worker_alive(app.extensions["reach"].store), timeout=30, what="the worker's heartbeat")
    answer = post(client, operator_headers, None, message="hello")
    assert answer.status_code == 202
    assert "warning" not in answer.get_json(), answer.get_json()


def test_cli_run_says_when_no_worker_runs(session, no_worker_beat) -> None:
    result = CliRunner().invoke(cli, ["cycle", "run", "--message", "hello"])
    assert result.exit_code == 0, result.output
    assert f"note: {NO_WORKER}" in result.stderr
    assert cycle_count(session) == 1


def test_a_key_is_forgotten_after_24_hours(client, session, operator_headers) -> None:
    from datetime import UTC, datetime, timedelta

    from sqlalchemy import update

    from shared import idempotency
    from shared.operator_models import IdempotencyKey

    assert post(client, operator_headers, "order-44", message="hello").status_code == 202
    session.execute(update(IdempotencyKey).values(created_at=datetime.now(UTC) - timedelta(hours=25)))
    session.commit()

    again = post(client, operator_headers, "order-44", message="something else")

    assert again.status_code == 202, again.get_json()  # a new request: the old key no longer counts
    assert cycle_count(session) == 2
    session.execute(update(IdempotencyKey).values(created_at=datetime.now(UTC) - timedelta(hours=25)))
    assert idempotency.forget_expired(session) == 1
    session.commit()
    assert session.scalar(select(func.count()).select_from(IdempotencyKey)) == 0
