"""`/metrics`: the receiver's callback and latency metrics (single-process and multiprocess mode),
the workers' counters and queue depths read from Redis, and who may read them."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import text

from reach_cli import processes
from shared.models import Cycle
from simulator.scenario import Scenario
from tests.conftest import METRICS_TOKEN, WEBHOOK_TOKEN, wait_for
from tests.services import ROOT, free_port
from tests.test_cycle import add_contacts, start, state_of, statuses

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]
READER = {"Authorization": f"Bearer {METRICS_TOKEN}"}


def parse(text: str) -> Samples:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def scrape(base_url: str) -> Samples:
    response = requests.get(f"{base_url}/metrics", headers=READER, timeout=10)
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"].startswith("text/plain")
    return parse(response.text)


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def delta(before: Samples, after: Samples, name: str, **labels: str) -> float:
    return value(after, name, **labels) - value(before, name, **labels)


def dlr(message_id: str, status: str = "Success") -> dict[str, str]:
    return {"id": message_id, "status": status, "phoneNumber": "+254711000001", "networkCode": "63902"}


def post(base_url: str, path: str, data: dict[str, str], token: str = WEBHOOK_TOKEN) -> int:
    return requests.post(f"{base_url}{path}?token={token}", data=data, timeout=10).status_code


# -- the receiver ---------------------------------------------------------------------------------------------


def test_callbacks_counted_by_kind_and_outcome(receiver, clean, redis_client) -> None:
    before = scrape(receiver)
    assert [post(receiver, "/dlr", dlr(f"ATXid_m{i}")) for i in range(3)] == [200] * 3
    assert post(receiver, "/dlr", {"status": "Success"}) == 400  # no id
    assert post(receiver, "/receiveSMS", {"from": "+254711000001"}) == 400  # no text, no date
    assert post(receiver, "/dlr", dlr("ATXid_x"), token="wrong") == 403
    after = scrape(receiver)

    assert delta(before, after, "reach_callbacks_total", kind="dlr", outcome="queued") == 3
    assert delta(before, after, "reach_callbacks_total", kind="dlr", outcome="bad_input") == 1
    assert delta(before, after, "reach_callbacks_total", kind="sms", outcome="bad_input") == 1
    assert delta(before, after, "reach_callbacks_total", kind="dlr", outcome="forbidden") == 1
    # Latency by route: the five /dlr requests, none under a path label.
    count = "reach_http_request_duration_seconds_count"
    assert delta(before, after, count, endpoint="callbacks.dlr", method="POST") == 5
    assert delta(before, after, count, endpoint="callbacks.receive_sms", method="POST") == 1
    # No worker runs in this module: the three callbacks wait in the inbox, and the wake-up in Celery's queue.
    assert value(after, "reach_inbox_depth") == 3
    assert value(after, "reach_redis_up") == 1
    assert value(after, "reach_celery_queue_length", queue="ingest") == redis_client.llen("ingest") >= 1


def test_unavailable_redis_is_counted_and_reported(make_app) -> None:
    """Redis gone: the callback gets 503 (AT retries), counted as `unavailable`; the scrape still answers."""
    app = make_app(redis_url=f"redis://127.0.0.1:{free_port()}/0")
    client = app.test_client()
    before = parse(client.get("/metrics", headers=READER).get_data(as_text=True))
    response = client.post(f"/dlr?token={WEBHOOK_TOKEN}", data=dlr("ATXid_down"))
    assert response.status_code == 503
    scraped = client.get("/metrics", headers=READER)
    assert scraped.status_code == 200
    after = parse(scraped.get_data(as_text=True))
    assert delta(before, after, "reach_callbacks_total", kind="dlr", outcome="unavailable") == 1
    assert value(after, "reach_redis_up") == 0
    assert ("reach_inbox_depth", ()) not in after


def test_metrics_needs_its_token(make_app) -> None:
    client = make_app().test_client()
    assert client.get("/metrics").status_code == 401
    assert client.get("/metrics", headers={"Authorization": "Bearer wrong-token-0123456789"}).status_code == 401
    assert client.get("/metrics", headers=READER).status_code == 200
    closed = make_app(metrics_token="").test_client()
    response = closed.get("/metrics", headers=READER)
    assert response.status_code == 401 and "METRICS_TOKEN" in response.get_json()["error"]
    assert make_app(metrics_token="", metrics_public=True).test_client().get("/metrics").status_code == 200


@contextmanager
def receiver_processes(multiproc: Path) -> Iterator[str]:
    """The production receiver (reach_cli/processes.py) with two worker processes in Prometheus multiprocess mode."""
    port = free_port()
    command = [sys.executable, "-m", *processes.receiver(f"127.0.0.1:{port}", workers=2)]
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(multiproc)}
    log_path = multiproc.parent / "receiver.log"
    with log_path.open("ab") as log:
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    base_url = f"http://127.0.0.1:{port}"

    def answers() -> bool:
        try:
            return requests.get(f"{base_url}/healthz", timeout=5).status_code == 200
        except requests.RequestException:
            return process.poll() is not None  # exited: fail below, not after the timeout

    try:
        wait_for(answers, timeout=30, what="the receiver")
        assert process.poll() is None, log_path.read_text()
        yield base_url
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(30)


def dlr_counts(samples: Samples) -> tuple[float, float, float]:
    return (
        value(samples, "reach_callbacks_total", kind="dlr", outcome="forbidden"),
        value(samples, "reach_callbacks_total", kind="dlr", outcome="queued"),
        value(samples, "reach_http_request_duration_seconds_count", endpoint="callbacks.dlr", method="POST"),
    )


def test_multiprocess_mode_sums_every_receiver_process(tmp_path: Path, clean) -> None:
    """Refusals (counted by Flask, on its threads) and queued DLRs (counted by the async front's fast path) are
    summed over both processes, whichever answers the scrape; a restart starts from zero."""
    multiproc = tmp_path / "prometheus"  # web/serve.py creates it
    with receiver_processes(multiproc) as base_url:
        for n in range(12):  # a connection each: requests spread over both processes
            assert requests.post(f"{base_url}/dlr?token=wrong", data=dlr("ATXid_q"), timeout=10).status_code == 403
            answer = requests.post(f"{base_url}/dlr?token={WEBHOOK_TOKEN}", data=dlr(f"ATXid_q{n}"), timeout=10)
            assert answer.status_code == 200
        for _ in range(6):  # whichever process answers, the totals are the sum over both
            assert dlr_counts(scrape(base_url)) == (12, 12, 24)
    assert list(multiproc.glob("*.db"))  # the counts were in files, not in one process's memory
    with receiver_processes(multiproc) as base_url:  # a restart starts from zero, not from the last run's files
        assert dlr_counts(scrape(base_url)) == (0, 0, 0)


# -- worker counters, applied in-process (before this module's worker starts) ---------------------------------


def test_delivery_reports_counted_once_with_bounded_labels(receiver, clean, drain) -> None:
    """Real callbacks through the receiver and the drain: a repeat is counted once, unknown words as `other`."""
    before = scrape(receiver)
    posted = [
        dlr("ATXid_b1", "Sent"),
        dlr("ATXid_b1", "Sent"),  # AT retried the callback: a new inbox item, the same report
        dlr("ATXid_b2", "Teleported"),  # a status the policy table does not know
        {**dlr("ATXid_b3", "Failed"), "failureReason": "+254711000001 said no"},  # free text: never a label
    ]
    assert [post(receiver, "/dlr", fields) for fields in posted] == [200] * 4
    assert drain() == 3
    after = scrape(receiver)
    reports = "reach_sms_delivery_reports_total"
    assert delta(before, after, reports, status="Sent", failure_reason="none") == 1
    assert delta(before, after, reports, status="other", failure_reason="none") == 1
    assert delta(before, after, reports, status="Failed", failure_reason="other") == 1
    assert value(after, "reach_inbox_depth") == 0


def test_counts_wait_for_the_commit(session, redis_client) -> None:
    """A rolled-back transaction counts nothing; a committed one counts once."""
    from shared import metrics

    session.rollback()
    metrics.count_on_commit(session, "reach_calls_placed", result="queued")  # before any SQL
    session.rollback()
    session.execute(text("SELECT 1"))
    metrics.count_on_commit(session, "reach_calls_placed", result="queued")  # inside a transaction
    session.rollback()
    session.commit()  # nothing pending: nothing counted
    assert redis_client.hgetall(metrics.COUNTERS) == {}
    metrics.count_on_commit(session, "reach_calls_placed", result="queued", amount=2)
    session.commit()
    assert list(redis_client.hgetall(metrics.COUNTERS).values()) == [b"2"]
    with pytest.raises(ValueError, match="takes labels"):
        metrics.count_on_commit(session, "reach_calls_placed", phone="+254711000001")


# -- the workers -----------------------------------------------------------------------------------------------

A, B, C = "+254711000101", "+254711000102", "+254711000103"
SCENARIO = {
    "numbers": {
        A: {"dlr": ["Sent", "Success"]},
        B: {"dlr": ["Sent", ["Failed", "UserIsInactive"]], "voice": "NO_ANSWER"},
        C: {"send_status": 403},
    },
}


def test_worker_counters_follow_real_cycles(live, receiver, session) -> None:
    """Two real cycles through the worker: every SMS answer, delivery report and call end counted once."""
    live.set_scenario(Scenario.from_dict(SCENARIO))
    add_contacts(receiver, [A, B, C])
    before = scrape(receiver)

    first = start(receiver, "Your bill is ready")
    wait_for(lambda: state_of(session, first) == "done", timeout=30, what="cycle 1 done")
    wait_for(lambda: statuses(session)[B].value == "inactive", timeout=20, what="B's failure applied")
    second = start(receiver, "Your bill is ready")  # A gets an SMS again; B, now inactive, gets a call
    wait_for(lambda: state_of(session, second) == "done", timeout=40, what="cycle 2 done")

    def counted() -> Samples | None:
        after = scrape(receiver)
        ended = delta(before, after, "reach_calls_ended_total", hangup_cause="NO_ANSWER", outcome="retry_later")
        success = delta(before, after, "reach_sms_delivery_reports_total", status="Success", failure_reason="none")
        return after if ended == 1 and success == 2 and value(after, "reach_inbox_depth") == 0 else None

    after = wait_for(counted, timeout=30, what="the worker's counters")
    sends = "reach_sms_sends_total"
    accepted = sum(v for (name, labels), v in after.items() if name == sends and ("action", "accepted") in labels)
    accepted -= sum(v for (name, labels), v in before.items() if name == sends and ("action", "accepted") in labels)
    assert accepted == 3  # A twice, B once
    assert delta(before, after, sends, code="403", action="invalid") == 1
    reports = "reach_sms_delivery_reports_total"
    assert delta(before, after, reports, status="Sent", failure_reason="none") == 3
    assert delta(before, after, reports, status="Failed", failure_reason="UserIsInactive") == 1
    assert delta(before, after, "reach_calls_placed_total", result="queued") == 1
    assert delta(before, after, "reach_callbacks_total", kind="dlr", outcome="queued") == 6
    assert delta(before, after, "reach_tasks_total", task="reach.cycle.plan", outcome="success") == 2
    assert delta(before, after, "reach_tasks_total", task="reach.ingest.drain", outcome="success") >= 1
    assert session.query(Cycle).count() == 2
    # Bounded labels: no phone number or message id anywhere in the exposition.
    text = requests.get(f"{receiver}/metrics", headers=READER, timeout=10).text
    assert all(phone.lstrip("+") not in text for phone in (A, B, C))
