"""Carrier incident guard end to end (issue 14): the receiver, a real worker with beat (housekeeping every 2 s),
Postgres, Redis and the simulator, where Airtel (63903) fails every SMS for an hour (the scenario's outage).

The worker runs with INCIDENT_MIN_FAILURES=3, so three Airtel failures in a cycle are an incident."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from sqlalchemy import select

from shared.operator_models import Alert
from simulator.scenario import Scenario
from tests.conftest import API_TOKEN, wait_for
from tests.services import WorkerProcess

AUTH = {"Authorization": f"Bearer {API_TOKEN}"}
DOWN = [f"+2547330000{i:02d}" for i in range(3)]  # Airtel: all its reports fail during the outage
UP = [f"+2547120000{i:02d}" for i in range(3)]  # Safaricom: UP[0] fails as any day, the others are delivered
OUTAGE = {
    "default": {"voice": "answered"},
    "numbers": {
        "+254733*": {"network_code": "63903"},
        UP[0]: {"dlr": ["Sent", ["Failed", "UserIsInactive"]]},
    },
    "outages": [{"network_code": "63903", "seconds": 3600}],
}


@pytest.fixture(scope="module")
def worker(environment: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[WorkerProcess]:
    env = {**os.environ, "INCIDENT_MIN_FAILURES": "3"}
    process = WorkerProcess(tmp_path_factory.mktemp("worker"), "incidents", env)
    yield process
    process.stop()


def api(receiver: str, method: str, path: str, **kwargs: Any) -> requests.Response:
    return requests.request(method, f"{receiver}{path}", headers=AUTH, timeout=10, **kwargs)


def run_cycle(receiver: str) -> dict[str, Any]:
    response = api(receiver, "POST", "/api/cycles", json={"message": "Your bill is ready"})
    assert response.status_code == 202, response.text
    cycle_id = response.json()["id"]

    def done() -> dict[str, Any] | None:
        body = api(receiver, "GET", f"/api/cycles/{cycle_id}").json()
        return body if body["state"] == "done" else None

    return wait_for(done, timeout=60, what=f"cycle {cycle_id} done")


def status(receiver: str, phone: str) -> str:
    return api(receiver, "GET", f"/api/contacts/{phone}").json()["status"]


def called(live: Any) -> list[str]:
    return [r["form"]["to"] for r in live.requests("/call")]


def test_an_outage_is_held_as_an_incident_until_the_operator_releases_it(live, receiver, session) -> None:
    live.set_scenario(Scenario.from_dict(OUTAGE))
    assert api(receiver, "POST", "/api/contacts", json=[{"phone": p} for p in DOWN + UP]).status_code == 200
    run_cycle(receiver)

    def open_incident() -> dict[str, Any] | None:
        rows = api(receiver, "GET", "/api/incidents").json()["incidents"]
        return next((r for r in rows if r["state"] == "open"), None)

    incident = wait_for(open_incident, timeout=30, what="an incident on Airtel")
    assert (incident["network_code"], incident["network"]) == ("63903", "Airtel Kenya")
    # The alert is written once the incident's transaction commits (alerts.on_commit): a moment after the API shows it.
    wait_for(lambda: session.scalars(select(Alert.kind)).all() == ["network_incident"], timeout=10, what="the alert")
    ready = requests.get(f"{receiver}/readyz", timeout=10).json()  # still ready: AT and we are fine
    assert any(w.startswith("network_incident: Airtel Kenya") for w in ready["warnings"]), ready
    wait_for(lambda: {status(receiver, p) for p in DOWN} == {"pending"}, timeout=10, what="downgrades held")
    assert status(receiver, UP[0]) == "inactive" and status(receiver, UP[1]) == "active"

    second = run_cycle(receiver)  # Airtel's contacts are neither called nor texted; UP[0] is called as ever
    assert second["skipped_by_status"]["network_incident"] == len(DOWN)
    assert called(live) == [UP[0]]

    released = api(receiver, "POST", f"/api/incidents/{incident['id']}/release")
    assert released.status_code == 200, released.text
    wait_for(lambda: {status(receiver, p) for p in DOWN} == {"inactive"}, timeout=30, what="downgrades applied")
    third = run_cycle(receiver)
    assert third["skipped_by_status"].get("network_incident", 0) == 0
    assert sorted(p for p in called(live)[1:] if p in DOWN) == DOWN  # called now, once each
