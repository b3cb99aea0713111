"""The receiver's fast path (web/fastpath.py) answers AT's DLRs and incoming SMS exactly as the Flask views do,
hands everything else to Flask, shares rate-limit windows with Flask-Limiter, and batches concurrent pushes
(web/group_commit.py) without losing or mixing up any.

Every request here goes through the real app on the private Redis; "Flask alone" is the same app's Flask
WSGI callable, reached without the fast path in front.
"""

from __future__ import annotations

import json
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import parse_qsl, urlencode

import pytest
import requests
from prometheus_client import REGISTRY
from werkzeug.datastructures import MultiDict
from werkzeug.test import Client

from shared.inbox import INBOX, encode
from simulator import wire
from tests.conftest import WEBHOOK_TOKEN, free_port, wait_for
from web.fastpath import CallbackFastPath, form_fields
from web.group_commit import GroupCommit

CUSTOMER = "+254711000001"
FORM = "application/x-www-form-urlencoded"


def queued_counts(kind: str, endpoint: str) -> tuple[float, float]:
    """`reach_callbacks_total` queued for `kind`, and the requests timed for `endpoint`: what the views count."""
    answered = REGISTRY.get_sample_value("reach_callbacks_total", {"kind": kind, "outcome": "queued"}) or 0
    timed = REGISTRY.get_sample_value(
        "reach_http_request_duration_seconds_count", {"endpoint": endpoint, "method": "POST"}
    )
    return answered, timed or 0


def dlr_body(n: int = 1) -> dict[str, str]:
    return wire.dlr(f"ATXid_{n:032x}", "Success", CUSTOMER)


def sms_body() -> dict[str, str]:
    return {"from": CUSTOMER, "to": "12345", "text": "STOP", "id": "sms-1", "date": "2026-12-01 10:00:00"}


def fast_path(app: Any) -> CallbackFastPath:
    assert isinstance(app.wsgi_app, CallbackFastPath), "the fast path is in front of the app when Redis is set"
    return app.wsgi_app


class FlaskCalls:
    """Counts the requests that reached Flask (a request the fast path answered never does)."""

    def __init__(self, app: Any) -> None:
        self.count = 0
        app.before_request(self._seen)

    def _seen(self) -> None:
        self.count += 1


def queued(redis_client) -> list[dict[str, Any]]:
    return [json.loads(raw) for raw in reversed(redis_client.lrange(INBOX, 0, -1))]


@pytest.mark.parametrize(("path", "body", "kind"), [("/dlr", dlr_body(), "dlr"), ("/receiveSMS", sms_body(), "sms")])
def test_the_fast_path_answers_and_queues_what_the_view_would(make_app, redis_client, path, body, kind) -> None:
    app = make_app()
    flask_calls = FlaskCalls(app)
    fast = app.test_client().post(f"{path}?token={WEBHOOK_TOKEN}", data=body)
    assert flask_calls.count == 0, "a well-formed form callback never reaches Flask"
    # The same callback as JSON is the view's (the fast path takes forms only).
    slow = app.test_client().post(f"{path}?token={WEBHOOK_TOKEN}", json=body)
    assert flask_calls.count == 1
    assert (fast.status_code, fast.content_type) == (slow.status_code, slow.content_type) == (200, "application/json")
    assert fast.json["status"] == slow.json["status"] == "queued"
    assert len(fast.data) == len(slow.data), "same JSON shape, byte for byte but the id"
    first, second = queued(redis_client)
    assert (first["id"], second["id"]) == (fast.json["id"], slow.json["id"])
    assert first["kind"] == second["kind"] == kind
    assert first["data"] == second["data"] == body


def _bad_utf8(client, path: str) -> Any:
    return client.post(f"{path}?token={WEBHOOK_TOKEN}", data=b"id=\xff\xfe&status=Success", content_type=FORM)


REFUSALS = {
    "missing field": lambda c, p: c.post(f"{p}?token={WEBHOOK_TOKEN}", data={"status": "Success"}),
    "wrong token": lambda c, p: c.post(f"{p}?token=nope", data=dlr_body()),
    "no token": lambda c, p: c.post(p, data=dlr_body()),
    "empty form": lambda c, p: c.post(f"{p}?token={WEBHOOK_TOKEN}", data=b"", content_type=FORM),
    "too large": lambda c, p: c.post(f"{p}?token={WEBHOOK_TOKEN}", data={"id": "x" * 70_000}),
    "not UTF-8": _bad_utf8,
    "bad phone": lambda c, p: c.post(f"{p}?token={WEBHOOK_TOKEN}", data={**sms_body(), "from": "not-a-number"}),
    "GET": lambda c, p: c.get(f"{p}?token={WEBHOOK_TOKEN}"),
    "trailing slash": lambda c, p: c.post(f"{p}/?token={WEBHOOK_TOKEN}", data=dlr_body()),
}


@pytest.mark.parametrize("path", ["/dlr", "/receiveSMS"])
@pytest.mark.parametrize("case", REFUSALS)
def test_whatever_the_fast_path_does_not_take_gets_flasks_own_answer(make_app, redis_client, path, case) -> None:
    app = make_app()
    with_fast_path = REFUSALS[case](app.test_client(), path)
    flask_alone = REFUSALS[case](Client(fast_path(app).flask_wsgi), path)
    assert with_fast_path.status_code == flask_alone.status_code
    assert with_fast_path.status_code >= 400
    assert with_fast_path.get_data() == flask_alone.get_data()
    assert with_fast_path.headers.get("Content-Type") == flask_alone.headers.get("Content-Type")


def test_a_repeated_field_keeps_its_first_value_as_werkzeug_does(make_app, redis_client) -> None:
    client = make_app().test_client()
    body = urlencode([*dlr_body().items(), ("status", "Failed")])
    assert client.post(f"/dlr?token={WEBHOOK_TOKEN}", data=body, content_type=FORM).status_code == 200
    assert queued(redis_client)[0]["data"]["status"] == "Success"


@pytest.mark.parametrize(
    "text",
    [
        "a=1&b=2",
        "a&b=",
        "&&a=%20x+y&",
        "a=%ZZ&b=%e9",
        "x==y",
        "=v",
        "a=1;b=2",
        "k+1=v%2",
        "p=%2B254%26",
        "a=1&a=2&b=%41&b=3",
    ],
)
def test_form_parsing_matches_werkzeugs(text: str) -> None:
    pairs = parse_qsl(text, keep_blank_values=True, errors="werkzeug.url_quote")
    assert form_fields(text) == MultiDict(pairs).to_dict()  # a repeated name keeps its first value


def test_rate_limit_windows_are_shared_with_flask_limiter(make_app, redis_client) -> None:
    """Without a WEBHOOK_TOKEN every callback counts in RATE_LIMIT_CALLBACKS (with one, a callback carrying it
    is never limited and one without it never takes the fast path: tests/test_rate_limits.py)."""
    client = make_app(webhook_token="", rate_limit_callbacks="3/hour").test_client()
    url = "/dlr"
    codes = [
        client.post(url, data=dlr_body(1)).status_code,  # fast path
        client.post(url, json=dlr_body(2)).status_code,  # Flask-Limiter
        client.post(url, data=dlr_body(3)).status_code,  # fast path
    ]
    refused = client.post(url, data=dlr_body(4))  # fast path finds the window full: Flask's 429
    assert codes == [200, 200, 200]
    assert refused.status_code == 429 and int(refused.headers["Retry-After"]) >= 1
    assert client.post(url, json=dlr_body(5)).status_code == 429
    assert redis_client.llen(INBOX) == 3


def test_every_configured_window_counts(make_app, redis_client) -> None:
    client = make_app(webhook_token="", rate_limit_callbacks="100/hour;2/minute").test_client()
    codes = [client.post("/dlr", data=dlr_body(n)).status_code for n in range(3)]
    assert codes == [200, 200, 429]
    assert redis_client.llen(INBOX) == 2


def test_redis_down_gets_the_views_503(make_app) -> None:
    app = make_app(redis_url=f"redis://127.0.0.1:{free_port()}/0")
    fast = app.test_client().post(f"/dlr?token={WEBHOOK_TOKEN}", data=dlr_body())
    slow = app.test_client().post(f"/dlr?token={WEBHOOK_TOKEN}", json=dlr_body())
    assert fast.status_code == slow.status_code == 503
    assert fast.get_data() == slow.get_data()


def test_the_fast_path_keeps_the_views_metrics(make_app) -> None:
    client = make_app().test_client()

    before = queued_counts("sms", "callbacks.receive_sms")
    assert client.post(f"/receiveSMS?token={WEBHOOK_TOKEN}", data=sms_body()).status_code == 200
    assert queued_counts("sms", "callbacks.receive_sms") == (before[0] + 1, before[1] + 1)


def test_concurrent_callbacks_share_round_trips_and_every_one_is_queued(receiver, redis_client) -> None:
    """The real receiver (a threaded server): 300 DLRs from 16 clients at once; each 200 is on the inbox
    under its own id, in fewer Redis round trips than callbacks."""
    redis_client.delete(INBOX)
    scripts_before = _script_calls(redis_client)

    def post(n: int) -> str:
        with requests.Session() as http:
            answer = http.post(f"{receiver}/dlr?token={WEBHOOK_TOKEN}", data=dlr_body(n), timeout=10)
        assert answer.status_code == 200, answer.text
        return answer.json()["id"]

    with ThreadPoolExecutor(16) as pool:
        ids = list(pool.map(post, range(300)))
    assert len(set(ids)) == 300
    assert {item["id"] for item in queued(redis_client)} == set(ids)
    assert {item["data"]["id"] for item in queued(redis_client)} == {f"ATXid_{n:032x}" for n in range(300)}
    assert _script_calls(redis_client) - scripts_before < 300


def _script_calls(redis_client) -> int:
    stats = redis_client.info("commandstats")
    return sum(stats.get(name, {}).get("calls", 0) for name in ("cmdstat_evalsha", "cmdstat_eval"))


# -- group commit ------------------------------------------------------------------------------------------


def test_requests_arriving_during_a_round_trip_go_together_in_the_next() -> None:
    batches: list[list[int]] = []
    first_flush_may_end = threading.Event()

    def flush(items):
        batches.append(list(items))
        if len(batches) == 1:
            assert first_flush_may_end.wait(10)
        return [item * 10 for item in items]

    group: GroupCommit[int, int] = GroupCommit(flush)
    results: dict[int, int] = {}

    def submit(n: int) -> None:
        with group.running():
            results[n] = group.submit(n)

    leader = threading.Thread(target=submit, args=(0,))
    leader.start()
    wait_for(lambda: batches, timeout=10, what="the leader's flush")
    others = [threading.Thread(target=submit, args=(n,)) for n in range(1, 6)]
    for thread in others:
        thread.start()
    wait_for(lambda: group.waiting == 5, timeout=10, what="five requests queued behind the leader")
    first_flush_may_end.set()
    for thread in [leader, *others]:
        thread.join(10)
    assert batches == [[0], [1, 2, 3, 4, 5]]
    assert results == {n: n * 10 for n in range(6)}


def test_a_failed_round_trip_fails_every_request_in_it_and_not_the_next() -> None:
    calls = []

    def flush(items):
        calls.append(list(items))
        if len(calls) == 1:
            raise ConnectionError("redis went away")
        return list(items)

    group: GroupCommit[str, str] = GroupCommit(flush)
    with pytest.raises(ConnectionError):
        group.submit("a")
    assert group.submit("b") == "b"
    assert group.waiting == 0


def test_inbox_ids_differ_in_a_forked_child() -> None:
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: a receiver worker forked from a main process that had made ids
        os.write(write_end, encode("dlr", {})[0].encode())
        os._exit(0)
    os.waitpid(pid, 0)
    child_id = os.read(read_end, 64).decode()
    parent_ids = {encode("dlr", {})[0] for _ in range(3)}
    assert len(child_id) == 32 and child_id not in parent_ids
    assert child_id[:16] not in {parent[:16] for parent in parent_ids}, "the child draws its own random prefix"
