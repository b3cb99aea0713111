"""What the CLI tests share (tests/test_cli*.py): click's runner, a mix of contacts, the broker down, and the
helpers that invoke a command and read its error. A plugin (tests/conftest.py `pytest_plugins`), so its
fixtures (`runner`, `contacts`, `broker_down`) are there for every test module; the helpers are imported."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from click.testing import CliRunner, Result
from sqlalchemy import func, select

from reach_cli.main import cli
from shared.models import Contact, ContactStatus, Cycle, CycleState
from shared.settings import get_settings
from tests.conftest import free_port

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


def invoke(runner: CliRunner, *args: str, input: str | None = None) -> Result:
    return runner.invoke(cli, list(args), prog_name="reach", catch_exceptions=False, input=input)


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
