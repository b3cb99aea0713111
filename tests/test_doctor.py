"""`reach doctor` (issue 13) through click's runner, against the real Postgres, Redis and the AT simulator."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
import requests
from click.testing import CliRunner, Result
from pydantic import SecretStr

from reach_cli.main import cli
from shared.models import Cycle, CycleState
from shared.operator_models import NetworkIncident
from shared.settings import get_settings
from tests.conftest import AT_API_KEY, WEBHOOK_TOKEN


def doctor(*args: str) -> tuple[Result, dict[str, dict[str, str]]]:
    result = CliRunner().invoke(cli, ["doctor", *args])
    checks = {}
    if "--json" in args and result.output.startswith("{"):
        checks = {c["name"]: c for c in json.loads(result.output)["checks"]}
    return result, checks


def test_simulator_answers_the_balance_and_refuses_a_wrong_key(fresh_simulator) -> None:
    url = f"{fresh_simulator.url}/version1/user"
    right = requests.get(url, params={"username": "sandbox"}, headers={"apiKey": AT_API_KEY}, timeout=5)
    assert (right.status_code, right.json()) == (200, {"UserData": {"balance": "KES 1234.50"}})
    assert right.headers["Content-Type"] == "application/json"
    wrong = requests.get(url, params={"username": "sandbox"}, headers={"apiKey": "nope"}, timeout=5)
    assert wrong.status_code == 401


def test_doctor_all_well_with_a_worker(live, session) -> None:
    """Everything up: each check on its own line, exit 0; the webhook token is masked."""
    result, checks = doctor("--json")
    assert result.exit_code == 0, result.output
    assert {name: c["level"] for name, c in checks.items()} == {
        "settings": "OK",
        "database": "OK",
        "broker": "OK",
        "worker": "OK",
        "at_credentials": "OK",
        "balance": "OK",
        "callback_urls": "OK",
        "dlr_silence": "OK",
        "parked_callbacks": "OK",
        "fallback_wait": "OK",
        "incidents": "OK",
    }
    assert checks["balance"]["detail"] == "KES 1234.50"
    assert "/dlr?token=" in checks["callback_urls"]["detail"]
    assert WEBHOOK_TOKEN not in result.output

    text = CliRunner().invoke(cli, ["doctor"])
    assert text.exit_code == 0
    assert [line.split()[0] for line in text.output.splitlines()] == ["OK"] * len(checks)


def test_doctor_fails_on_refused_credentials_and_warns_of_silence(
    fresh_simulator, session, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A wrong AT key is a FAIL (exit 1) naming the credentials, never printing the key; a silent cycle a WARN."""
    session.add(
        Cycle(
            message="hello",
            state=CycleState.DONE,
            dlr_checked_at=datetime.now(UTC),
            dlr_silent_at=datetime.now(UTC),
            dlr_event_mark=0,
        )
    )
    session.commit()
    monkeypatch.setenv("AT_API_KEY", "wrong-key-0d9e8f")
    get_settings.cache_clear()
    try:
        result, checks = doctor("--json")
    finally:
        monkeypatch.undo()
        get_settings.cache_clear()
    assert result.exit_code == 1, result.output
    assert checks["at_credentials"]["level"] == "FAIL"
    assert "credentials" in checks["at_credentials"]["detail"]
    assert "wrong-key-0d9e8f" not in result.output
    assert checks["dlr_silence"]["level"] == "WARN"
    assert "delivery report" in checks["dlr_silence"]["detail"]


def test_under_reach_up_the_generated_webhook_token_counts(tmp_path) -> None:
    """`reach up` keeps the token it generates in var/ and gives it to its children only: `reach doctor`, run
    by hand beside it, must not report the callbacks as open to anyone."""
    from reach_cli.doctor import OK, WARN, check_callbacks

    settings = get_settings().model_copy(update={"webhook_token": SecretStr("")})
    [open_check] = check_callbacks(settings, var_dir=tmp_path)
    assert (open_check.level, "WEBHOOK_TOKEN unset" in open_check.detail) == (WARN, True)

    (tmp_path / "webhook-token.secret").write_text("generated-webhook-token-0123456789\n")
    [check] = check_callbacks(settings, var_dir=tmp_path)
    assert check.level == OK and "var/webhook-token.secret" in check.detail
    assert "generated-webhook-token-0123456789" not in check.detail


def test_doctor_warns_of_a_network_incident_and_how_to_release_it(session) -> None:
    """An open carrier incident holds a network's downgrades and calls (shared/incidents.py): an operator
    running `reach doctor` must see it, which network, and the command that releases it."""
    from reach_cli.doctor import OK, WARN, check_incidents

    settings = get_settings()
    [calm] = check_incidents(settings)
    assert (calm.level, calm.detail) == (OK, "no network incident holds contacts")

    now = datetime.now(UTC)
    incident = NetworkIncident(
        network_code="63903", opened_at=now, since=now, failures=60, reports=80, baseline_rate=0.05
    )
    session.add(incident)
    session.commit()
    [held] = check_incidents(settings)
    assert held.level == WARN
    assert held.detail.startswith("Airtel Kenya: 60 of 80") and f"reach incident release {incident.id}" in held.detail
