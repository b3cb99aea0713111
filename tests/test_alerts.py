"""Alerts (issue 13) raised by the worker's own functions, run in-process against the real Postgres, Redis and
the AT simulator, and shown on the dashboard. The webhook and the DLR silence run end to end in
tests/test_dlr_silence.py."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from sqlalchemy import select

from shared import at_client, cycles, metrics
from shared.models import Contact, Cycle, CycleState
from shared.settings import get_settings
from tests.conftest import API_TOKEN
from tests.test_drain import drain, parked, push_raw, seed_messages
from worker import cycles as worker_cycles

SAME_ORIGIN = {"Origin": "http://localhost"}


def alerts_of(session: Any, kind: str) -> list[Any]:
    # Here, not at the top: the file also runs (and fails) on code without alerts.
    from shared.operator_models import Alert

    session.expire_all()
    return list(session.scalars(select(Alert).where(Alert.kind == kind)))


def test_a_parked_callback_raises_an_alert(session, redis_client, caplog: pytest.LogCaptureFixture) -> None:
    """Parked callbacks are each counted, but a burst of them is one alert, not one per callback."""
    seed_messages(1)
    for n in range(2):
        push_raw(redis_client, "sms", {"from": "+254711000001", "to": "1", "id": f"{n}" * 500})
    with caplog.at_level(logging.WARNING):
        drain(redis_client)
    assert len(parked(redis_client)) == 2
    assert any(r.levelno == logging.WARNING and "alert callback_parked" in r.getMessage() for r in caplog.records)
    [alert] = alerts_of(session, "callback_parked")
    assert "field too long" in alert.message
    assert int(redis_client.hget(metrics.COUNTERS, '["reach_alerts","callback_parked"]')) == 2


def test_refused_at_credentials_pause_the_cycle_with_two_alerts(
    fresh_simulator, session, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A 401 from AT pauses the cycle (an account problem) and says the credentials are the problem."""
    session.add(Contact(phone="+254711000009"))
    session.commit()
    cycle_id = cycles.start_cycle(session, "hello")
    session.commit()
    worker_cycles.plan_cycle(session, cycle_id)
    session.commit()
    monkeypatch.setenv("AT_API_KEY", "wrong-key-for-alerts")
    get_settings.cache_clear()
    at_client.reset_at_client()
    try:
        assert worker_cycles.dispatch_sms(cycle_id, budget_seconds=5) == "paused"
    finally:
        monkeypatch.undo()
        get_settings.cache_clear()
        at_client.reset_at_client()
    session.expire_all()
    assert session.get(Cycle, cycle_id).state is CycleState.PAUSED
    [paused] = alerts_of(session, "cycle_paused")
    assert paused.details == {"cycle_id": cycle_id}
    [credentials] = alerts_of(session, "at_credentials")
    assert "AT_API_KEY" in credentials.message and "wrong-key-for-alerts" not in credentials.message


def test_dashboard_lists_recent_alerts(client, session) -> None:
    """A cycle paused for an account problem is on the dashboard, with why."""
    cycle = Cycle(message="hello", state=CycleState.DISPATCHING)
    session.add(cycle)
    session.commit()
    cycles.pause(session, cycle.id, "AT refused the whole request: InsufficientBalance")
    session.commit()
    client.post("/dashboard/login", data={"token": API_TOKEN}, headers=SAME_ORIGIN)
    page = client.get("/dashboard").get_data(as_text=True)
    assert "Recent alerts" in page
    assert f"cycle {cycle.id} paused: AT refused the whole request: InsufficientBalance" in page


@pytest.mark.parametrize(
    ("name", "value", "error"),
    [
        ("dlr_silence_seconds", 0, "DLR_SILENCE_SECONDS"),
        ("alert_webhook_url", "ftp://hooks.example/alert?key=s3cret-hook", "ALERT_WEBHOOK_URL"),
    ],
)
def test_new_settings_are_validated_without_echoing_the_webhook(name: str, value: object, error: str) -> None:
    from shared.settings import SettingsError, load_settings

    with pytest.raises(SettingsError) as caught:
        load_settings(**{name: value})
    assert error in str(caught.value) and "s3cret-hook" not in str(caught.value)
