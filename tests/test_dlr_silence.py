"""Delivery reports that never come, and alerts (issue 13): the receiver, a real worker with beat, Postgres
and the simulator posting no delivery reports, as when AT's DLR URL is unset or its token wrong.

The worker runs with DLR_SILENCE_SECONDS=2 (housekeeping every 2 s), so a silence is found in seconds, and
with ALERT_WEBHOOK_URL pointing at a small server in this module that records what it is sent.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import requests
from sqlalchemy import select

from shared.models import Message
from simulator.scenario import Scenario
from tests.conftest import API_TOKEN, METRICS_TOKEN, WEBHOOK_TOKEN, wait_for
from tests.services import WorkerProcess

AUTH = {"Authorization": f"Bearer {API_TOKEN}"}
A, B, C = (f"+25471200000{i}" for i in range(1, 4))
NO_REPORTS = {"default": {"dlr": [], "voice": "answered"}}
HOOK_SECRET = "hook-secret-7d1e"


class AlertHook:
    """A webhook that records each JSON post; it fails the first `fail_first` posts with a 500."""

    def __init__(self, fail_first: int = 1) -> None:
        self.posts: list[dict[str, Any]] = []
        self.answers: list[int] = []
        self.fail_first = fail_first
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                hook.posts.append(body)
                status = 500 if len(hook.posts) <= hook.fail_first else 200
                hook.answers.append(status)
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *_args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_port}/alerts?key={HOOK_SECRET}"

    def kinds(self, status: int = 200) -> list[str]:
        return [post["kind"] for post, answer in zip(self.posts, self.answers, strict=False) if answer == status]

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def hook() -> Iterator[AlertHook]:
    server = AlertHook()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def worker(environment: None, hook: AlertHook, tmp_path_factory: pytest.TempPathFactory) -> Iterator[WorkerProcess]:
    """This module's worker: silences found after 2 s, alerts posted to `hook`."""
    env = {**os.environ, "DLR_SILENCE_SECONDS": "2", "ALERT_WEBHOOK_URL": hook.url}
    process = WorkerProcess(tmp_path_factory.mktemp("worker"), "dlr-silence", env)
    yield process
    process.stop()
    assert HOOK_SECRET not in process.log()  # the webhook's URL is a secret: never logged whole


def api(receiver: str, method: str, path: str, **kwargs: Any) -> requests.Response:
    return requests.request(method, f"{receiver}{path}", headers=AUTH, timeout=10, **kwargs)


def start(receiver: str, **fields: Any) -> int:
    response = api(receiver, "POST", "/api/cycles", json={"message": "Your bill is ready", **fields})
    assert response.status_code == 202, response.text
    return response.json()["id"]


def dry_run(receiver: str, **fields: Any) -> dict[str, Any]:
    response = api(receiver, "POST", "/api/cycles", json={"message": "hello", "dry_run": True, **fields})
    assert response.status_code == 200, response.text
    return response.json()


def cycle(receiver: str, cycle_id: int) -> dict[str, Any]:
    return api(receiver, "GET", f"/api/cycles/{cycle_id}").json()


def readiness(receiver: str) -> tuple[int, dict[str, Any]]:
    response = requests.get(f"{receiver}/readyz", timeout=10)
    return response.status_code, response.json()


def test_dlr_silence_holds_contacts_back_until_reports_flow(live, receiver, hook, session) -> None:
    """No report for a whole cycle: an alert, /readyz warns (still 200), and the next cycle neither calls nor
    texts those contacts again (skipped, dlr_silence) unless told to; a report arriving ends the silence."""
    live.set_scenario(Scenario.from_dict(NO_REPORTS))
    assert api(receiver, "POST", "/api/contacts", json=[{"phone": p} for p in (A, B, C)]).status_code == 200
    first = start(receiver)
    wait_for(lambda: cycle(receiver, first)["state"] == "done", timeout=30, what="cycle 1 done")
    assert cycle(receiver, first)["sms_detail"]["delivered"] == 0

    def warned() -> bool:
        status, body = readiness(receiver)
        return status == 200 and any("dlr_silence" in w for w in body.get("warnings", []))

    wait_for(warned, timeout=30, what="/readyz to warn of the delivery-report silence")
    wait_for(lambda: "dlr_silence" in hook.kinds(), timeout=30, what="the dlr_silence alert posted")
    assert cycle(receiver, first)["dlr_silent_at"]
    alert = next(p for p in hook.posts if p["kind"] == "dlr_silence")
    assert alert["cycle_id"] == first and "delivery report" in alert["message"] and alert["at"]

    preview = dry_run(receiver)
    assert (preview["sms"], preview["voice"], preview["skipped"]) == (0, 0, 3)
    assert preview["skipped_by_status"]["dlr_silence"] == 3
    overridden = dry_run(receiver, ignore_dlr_silence=True)
    assert (overridden["voice"], overridden["skipped"]) == (3, 0)
    assert api(receiver, "POST", "/api/cycles", json={"message": "x", "ignore_dlr_silence": "yes"}).status_code == 400

    second = start(receiver)
    wait_for(lambda: cycle(receiver, second)["state"] == "done", timeout=30, what="cycle 2 done")
    report = cycle(receiver, second)
    assert (report["sms"], report["voice"], report["skipped"]) == (0, 0, 3)
    assert report["skipped_by_status"]["dlr_silence"] == 3
    assert live.requests("/call") == [] and len(live.requests("/version1/messaging")) == 1

    # Reports flow again: one delivery report for one of cycle 1's messages ends the silence.
    message_id = session.scalar(select(Message.at_message_id).where(Message.cycle_id == first).limit(1))
    posted = requests.post(
        f"{receiver}/dlr?token={WEBHOOK_TOKEN}", data={"id": message_id, "status": "Success"}, timeout=10
    )
    assert posted.status_code == 200
    wait_for(lambda: dry_run(receiver)["skipped"] == 0, timeout=30, what="the silence to end")
    assert dry_run(receiver)["voice"] == 2
    assert not readiness(receiver)[1]["warnings"]


def test_paused_cycle_alert_is_retried_to_the_webhook(live, receiver, hook) -> None:
    """An account problem pauses the cycle; the alert reaches the webhook although its first post failed,
    and is counted in /metrics."""
    live.set_scenario(Scenario.from_dict({"numbers": {"*": {"send_status": 405}}}))
    assert api(receiver, "POST", "/api/contacts", json=[{"phone": A}]).status_code == 200
    cycle_id = start(receiver)
    wait_for(lambda: "cycle_paused" in hook.kinds(), timeout=60, what="the cycle_paused alert posted")
    alert = next(p for p in hook.posts if p["kind"] == "cycle_paused" and p.get("cycle_id") == cycle_id)
    assert "InsufficientBalance" in alert["message"]
    assert hook.answers[0] == 500  # the first post of the module failed and was tried again
    assert hook.posts[0]["kind"] in hook.kinds(200)
    metrics = requests.get(f"{receiver}/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"}, timeout=10).text
    assert 'reach_alerts_total{kind="cycle_paused"}' in metrics


def test_cli_dry_run_shows_the_silence_and_the_override(session) -> None:
    """`reach cycle run --dry-run` says who a silence holds back and why; `--ignore-dlr-silence` calls them."""
    from click.testing import CliRunner

    from reach_cli.main import cli
    from shared.models import Contact, ContactStatus, Cycle, CycleState

    silent = Cycle(message="hi", state=CycleState.DONE, dlr_silent_at=datetime.now(UTC), dlr_event_mark=0)
    contact = Contact(phone=A, status=ContactStatus.PENDING)
    session.add_all([silent, contact])
    session.flush()
    message = Message(contact_id=contact.id, cycle_id=silent.id, phone=A, text="hi", send_state="sent")
    session.add(message)
    session.flush()
    contact.last_message_id = message.id
    session.commit()

    held = CliRunner().invoke(cli, ["cycle", "run", "--message", "hello", "--dry-run"])
    assert held.exit_code == 0, held.output
    assert "skipped:        1 (dlr_silence 1)" in held.output and "--ignore-dlr-silence" in held.output
    routed = CliRunner().invoke(cli, ["cycle", "run", "--message", "hello", "--dry-run", "--ignore-dlr-silence"])
    assert routed.exit_code == 0, routed.output
    assert "voice calls:    1" in routed.output


def test_a_one_off_send_never_calls_a_contact_a_silence_holds(session, client, operator_headers) -> None:
    """A cycle leaves out a contact whose last SMS is from a silent cycle and has no report (whether it arrived
    is not known), and so does a one-off send: it would call someone who may have read the SMS. Before, `POST
    /communicate` called them (202, channel voice). A report arriving again lifts the hold."""
    from shared.models import Contact, ContactStatus, Cycle, CycleState, DlrEvent

    silent = Cycle(message="hi", state=CycleState.DONE, dlr_silent_at=datetime.now(UTC), dlr_event_mark=0)
    held, failed = Contact(phone=A, status=ContactStatus.PENDING), Contact(phone=B, status=ContactStatus.INACTIVE)
    session.add_all([silent, held, failed])
    session.flush()
    for contact, status in ((held, None), (failed, "Failed")):
        message = Message(contact_id=contact.id, cycle_id=silent.id, phone=contact.phone, text="hi", send_state="sent")
        message.status = status
        session.add(message)
        session.flush()
        contact.last_message_id = message.id
    session.commit()

    refused = client.post("/communicate", json={"to": A, "message": "Your order is ready"}, headers=operator_headers)
    called = client.post("/communicate", json={"to": B, "message": "Your order is ready"}, headers=operator_headers)

    assert refused.status_code == 409, refused.get_json()
    assert f"cycle {silent.id}" in refused.get_json()["error"] and "delivery report" in refused.get_json()["error"]
    assert (called.status_code, called.get_json()["channel"]) == (202, "voice")  # its SMS failed: AT said so
    session.add(DlrEvent(at_message_id="ATXid_any", status="Success", received_at=datetime.now(UTC)))
    session.commit()
    lifted = client.post("/communicate", json={"to": A, "message": "hi"}, headers=operator_headers)
    assert (lifted.status_code, lifted.get_json()["channel"]) == (202, "voice")
