"""The receiver's async front (web/front.py), in process: it answers AT's DLRs and incoming SMS as the Flask views
do, hands everything else to Flask with the body it read, shares rate-limit windows and metrics with Flask,
and reads bodies under the deadline on its event loop (web/front_bodies.py), batching pushes without losing
any (web/async_group.py). The production server around it is tested in tests/test_hostile_clients.py and
tests/test_chunked_bodies.py.

The front is driven through a small WSGI shim (`FrontAsWsgi`, over stand-ins for granian's RSGI objects:
tests/rsgi_fakes.py), so Werkzeug's test client talks to it as to the Flask app: every answer can be compared
with the Flask app's own, byte for byte.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterable
from typing import Any

import pytest
from werkzeug.test import Client

from shared.inbox import INBOX
from shared.settings import load_settings
from tests.conftest import WEBHOOK_TOKEN, free_port
from tests.rsgi_fakes import Headers, Proto, Scope
from tests.test_fastpath import REFUSALS, FlaskCalls, dlr_body, queued, queued_counts, sms_body
from web.async_group import AsyncGroupCommit
from web.front import ReceiverFront
from web.front_bodies import read_body
from web.wsgi_bridge import environ_for


class FrontAsWsgi:
    """The front as a WSGI callable, on one event loop of its own (as a server's worker process runs it, and as
    its Redis connection needs): a test harness, not a server."""

    def __init__(self, front: ReceiverFront) -> None:
        self.front = front
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        """The front's shutdown, on its loop; then the loop's end."""
        asyncio.run_coroutine_threadsafe(self.front.aclose(), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(30)
        self.loop.close()

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        headers = [("content-type", environ["CONTENT_TYPE"])] if environ.get("CONTENT_TYPE") else []
        if environ.get("CONTENT_LENGTH"):
            headers.append(("content-length", environ["CONTENT_LENGTH"]))
        body = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
        scope = Scope(environ["REQUEST_METHOD"], environ["PATH_INFO"], environ["QUERY_STRING"], Headers(headers))
        proto = Proto([body] if body else [])
        asyncio.run_coroutine_threadsafe(self.front.__rsgi__(scope, proto), self.loop).result(60)
        start_response(str(proto.status), proto.headers)
        return [proto.body]


@pytest.fixture
def make_front(clean: None) -> Any:
    """Build fronts (and the Flask app each wraps) with setting overrides; closed after the test."""
    from web import create_app

    built: list[tuple[Any, FrontAsWsgi]] = []

    def make(**overrides: Any) -> tuple[Any, Client]:
        settings = load_settings(**overrides)
        app = create_app(settings, fast_path=False)
        inbox = app.extensions["reach"].inbox if settings.uses_redis else None
        front = FrontAsWsgi(ReceiverFront(app.wsgi_app, settings, inbox, threads=2))
        built.append((app, front))
        return app, Client(front)

    yield make
    for app, front in built:
        front.close()
        app.extensions["reach"].close()


@pytest.mark.parametrize(("path", "body", "kind"), [("/dlr", dlr_body(), "dlr"), ("/receiveSMS", sms_body(), "sms")])
def test_the_front_answers_and_queues_what_the_view_would(make_front, redis_client, path, body, kind) -> None:
    app, front = make_front()
    flask_calls = FlaskCalls(app)
    fast = front.post(f"{path}?token={WEBHOOK_TOKEN}", data=body)
    assert flask_calls.count == 0, "a well-formed form callback never reaches Flask"
    slow = front.post(f"{path}?token={WEBHOOK_TOKEN}", json=body)  # JSON: the view's
    assert flask_calls.count == 1
    assert (fast.status_code, fast.content_type) == (slow.status_code, slow.content_type) == (200, "application/json")
    assert len(fast.data) == len(slow.data), "same JSON shape, byte for byte but the id"
    first, second = queued(redis_client)
    assert (first["id"], second["id"]) == (fast.json["id"], slow.json["id"])
    assert first["kind"] == second["kind"] == kind
    assert first["data"] == second["data"] == body


@pytest.mark.parametrize("path", ["/dlr", "/receiveSMS"])
@pytest.mark.parametrize("case", REFUSALS)
def test_whatever_the_front_does_not_take_gets_flasks_own_answer(make_front, redis_client, path, case) -> None:
    app, front = make_front()
    through_front = REFUSALS[case](front, path)
    flask_alone = REFUSALS[case](app.test_client(), path)
    assert through_front.status_code == flask_alone.status_code >= 400
    assert through_front.get_data() == flask_alone.get_data()
    assert through_front.headers.get("Content-Type") == flask_alone.headers.get("Content-Type")
    assert redis_client.llen(INBOX) == 0


def test_rate_limit_windows_are_shared_with_flask_limiter(make_front, redis_client) -> None:
    _, front = make_front(webhook_token="", rate_limit_callbacks="3/hour")
    codes = [
        front.post("/dlr", data=dlr_body(1)).status_code,  # the front
        front.post("/dlr", json=dlr_body(2)).status_code,  # Flask-Limiter
        front.post("/dlr", data=dlr_body(3)).status_code,  # the front
    ]
    refused = front.post("/dlr", data=dlr_body(4))  # the front finds the window full: Flask's 429, counted once
    assert codes == [200, 200, 200]
    assert refused.status_code == 429 and int(refused.headers["Retry-After"]) >= 1
    assert redis_client.llen(INBOX) == 3


def test_pushes_go_on_after_redis_forgets_the_script_and_drops_the_connection(make_front, redis_client) -> None:
    """The front's own connection (web/async_push.py) loads the script again after a SCRIPT FLUSH (a Redis
    restart) and connects again after its connection was dropped, as redis-py's client did for it."""
    _, front = make_front()
    url = f"/dlr?token={WEBHOOK_TOKEN}"
    assert front.post(url, data=dlr_body(1)).status_code == 200
    redis_client.script_flush()
    assert front.post(url, data=dlr_body(2)).status_code == 200
    redis_client.client_kill_filter(_type="normal", skipme=True)
    assert front.post(url, data=dlr_body(3)).status_code == 200
    assert [item["data"]["id"] for item in queued(redis_client)] == [dlr_body(n)["id"] for n in (1, 2, 3)]


def test_redis_down_gets_the_views_503(make_front) -> None:
    _, front = make_front(redis_url=f"redis://127.0.0.1:{free_port()}/0")
    fast = front.post(f"/dlr?token={WEBHOOK_TOKEN}", data=dlr_body())
    slow = front.post(f"/dlr?token={WEBHOOK_TOKEN}", json=dlr_body())
    assert fast.status_code == slow.status_code == 503
    assert fast.get_data() == slow.get_data()


def test_the_front_keeps_the_views_metrics(make_front) -> None:
    _, front = make_front()

    def counts() -> tuple[float, float]:
        return queued_counts("dlr", "callbacks.dlr")

    before = counts()
    assert front.post(f"/dlr?token={WEBHOOK_TOKEN}", data=dlr_body()).status_code == 200
    assert front.post(f"/dlr?token={WEBHOOK_TOKEN}", json=dlr_body()).status_code == 200  # through Flask
    assert counts() == (before[0] + 2, before[1] + 2)


def test_the_embedded_mode_has_flask_answer_every_callback(make_front) -> None:
    """No REDIS_URL: the inbox is the database, and Flask (on the front's threads) answers everything."""
    app, front = make_front(redis_url="")
    flask_calls = FlaskCalls(app)
    answer = front.post(f"/dlr?token={WEBHOOK_TOKEN}", data=dlr_body())
    assert answer.status_code == 200 and answer.json["status"] == "queued"
    assert flask_calls.count == 1


def test_the_environ_has_the_addresses_granian_gives_without_ipv6_brackets() -> None:
    """granian writes an address as `[::1]:5000`; WSGI's REMOTE_ADDR is the address alone (ProxyFix, the
    rate-limit windows and the access line read it)."""
    environ = environ_for(Scope("GET", "/healthz", client="[::1]:5000", server="[::1]:8000"))
    assert (environ["REMOTE_ADDR"], environ["REMOTE_PORT"]) == ("::1", "5000")
    assert (environ["SERVER_NAME"], environ["SERVER_PORT"]) == ("::1", "8000")


# -- the body reader ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("length", [None, 19], ids=["chunked", "declared length"])
def test_a_body_is_read_whole_across_pieces(length: int | None) -> None:
    proto = Proto([b"id=1&", b"status=Success"], then="stall")  # read to its length, or to its end
    if length is None:
        proto.then = "end"
    body = asyncio.run(read_body(proto, length, cap=1000, seconds=5))
    assert (body.complete, body.bytes(), body.keeps_connection) == (True, b"id=1&status=Success", True)
    body.close()


def test_a_stalled_body_is_cut_at_its_bound_plus_what_its_bytes_earned() -> None:
    """BODY_TIMEOUT_SECONDS from the first read, plus a second per `min_rate` bytes delivered."""
    proto = Proto([b"x" * 50], then="stall")
    loop_time: list[float] = []

    async def timed() -> Any:
        loop = asyncio.get_running_loop()
        began = loop.time()
        body = await read_body(proto, 1000, cap=1000, seconds=0.3, min_rate=100)  # 50 bytes earn half a second
        loop_time.append(loop.time() - began)
        return body

    body = asyncio.run(timed())
    assert (body.complete, body.too_slow, body.size) == (False, True, 50)
    assert 0.75 <= loop_time[0] < 1.5
    reader = body.wsgi_input(chunked=False, seconds=0.3)
    assert reader.read() == b"x" * 50
    with pytest.raises(Exception, match="too slow"):  # the 408, where the rest would be
        reader.read()
    body.close()


@pytest.mark.parametrize("length", [None, 10], ids=["chunked", "declared length"])
def test_a_body_cut_short_ends_early_and_a_broken_chunked_one_raises(length: int | None) -> None:
    body = asyncio.run(read_body(Proto([b"abc"], then="break"), length, cap=1000, seconds=5))
    assert (body.complete, body.broken, body.keeps_connection) == (False, True, False)
    assert body.wsgi_input(chunked=False, seconds=5).read() == b"abc"  # GuardedInput counts it short
    reader = body.wsgi_input(chunked=True, seconds=5)
    assert reader.read(3) == b"abc"
    with pytest.raises(ConnectionError):
        reader.read(3)
    body.close()


def test_a_body_past_its_cap_is_not_read_on() -> None:
    proto = Proto([b"x" * 600, b"x" * 600, b"never read"], then="stall")
    body = asyncio.run(read_body(proto, None, cap=1000, seconds=5))
    assert (body.over, body.complete, body.size, proto.asked) == (True, False, 1200, 1200)
    body.close()


# -- the group commit ---------------------------------------------------------------------------------------


def test_concurrent_submits_share_flushes_and_each_gets_its_own_result() -> None:
    batches: list[list[int]] = []

    async def flush(items: list[int]) -> list[int]:
        batches.append(list(items))
        await asyncio.sleep(0)  # a round trip: the loop serves others meanwhile
        return [item * 10 for item in items]

    group = AsyncGroupCommit(flush)

    async def many() -> list[int]:
        return list(await asyncio.gather(*(group.submit(n) for n in range(20))))

    assert asyncio.run(many()) == [n * 10 for n in range(20)]
    assert sorted(item for batch in batches for item in batch) == list(range(20))
    assert len(batches) < 20  # shared: the requests of one turn of the loop went together


def test_a_failed_flush_fails_its_batch_and_not_the_next() -> None:
    calls = 0

    async def flush(items: list[str]) -> list[str]:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise ConnectionError("redis went away")
        return items

    group = AsyncGroupCommit(flush)

    async def two() -> tuple[Any, Any]:
        first = await asyncio.gather(group.submit("a"), return_exceptions=True)
        second = await group.submit("b")
        return first[0], second

    failed, ok = asyncio.run(two())
    assert isinstance(failed, ConnectionError) and ok == "b"


def test_a_streamed_answer_goes_out_as_the_app_yields_it(clean: None) -> None:
    """A cycle's CSV export is a generator of pages (shared/cycle_export.py: a million contacts never sit in
    memory): the front must send each part as the app yields it, not collect the whole answer first."""
    produced: list[int] = []

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        start_response("200 OK", [("Content-Type", "text/csv")])
        for row in range(3):
            produced.append(row)
            yield f"row {row}\n".encode()

    front = ReceiverFront(app, load_settings(), None, threads=2)
    sent: list[tuple[bytes, int]] = []
    proto = Proto([], on_part=lambda part: sent.append((part, len(produced))))
    try:
        asyncio.run(front.__rsgi__(Scope("GET", "/export.csv"), proto))
    finally:
        front.close()
    assert sent[0] == (b"row 0\n", 1)  # out before the app made the next row
    assert proto.body == b"row 0\nrow 1\nrow 2\n"


def test_of_bodies_read_at_once_only_the_stalled_ones_are_cut_and_a_cancelled_read_stays_cancelled() -> None:
    """The deadlines of all reads on a loop are checked by one sweep: a stalled body is cut at its own bound,
    the others read whole, and a request cancelled by someone else (the server) is not taken for a slow body."""

    async def reads() -> tuple[list[Any], bool]:
        whole = [Proto([b"id=%d" % n], then="stall") for n in range(5)]
        stalled = Proto([b"x" * 10], then="stall")
        bodies = await asyncio.gather(
            *(read_body(proto, 4, cap=1000, seconds=5) for proto in whole),
            read_body(stalled, 100, cap=1000, seconds=0.2, min_rate=1000),
        )
        cancelled = asyncio.ensure_future(read_body(Proto([], then="stall"), 100, cap=1000, seconds=0.1))
        await asyncio.sleep(0.01)
        cancelled.cancel()
        try:
            await cancelled
        except asyncio.CancelledError:
            return bodies, True
        return bodies, False

    bodies, cancelled = asyncio.run(reads())
    assert [(b.complete, b.bytes()) for b in bodies[:5]] == [(True, b"id=%d" % n) for n in range(5)]
    assert (bodies[5].complete, bodies[5].too_slow, bodies[5].size) == (False, True, 10)
    assert cancelled
    for body in bodies:
        body.close()


def upload(front: ReceiverFront, body: bytes, headers: list[tuple[str, str]]) -> tuple[int | None, int]:
    """POST `body` as CSV to /api/contacts in 64 KiB pieces: (status, bytes the front asked for)."""
    headers = [("content-type", "text/csv"), ("content-length", str(len(body))), *headers]
    proto = Proto([body[at : at + 65536] for at in range(0, len(body), 65536)], then="stall")
    asyncio.run(front.__rsgi__(Scope("POST", "/api/contacts", headers=Headers(headers)), proto))
    return proto.status, proto.asked


def contacts_csv(rows: int) -> bytes:
    return b"phone,name\n" + b"".join(b"+2547%08d,Amina\n" % i for i in range(rows))


def test_an_upload_without_the_operators_token_is_not_read_past_the_ordinary_body_limit(clean) -> None:
    """Operator uploads under /api/ may be 32 MiB (MAX_UPLOAD_BYTES); a stranger's are refused 401 having read no
    more than any other route would (MAX_BODY_BYTES), as Flask refused them first under gunicorn. Before, the
    front read (and spooled to disk) the whole 16 MiB, then Flask said 401."""
    from tests.conftest import API_TOKEN
    from web import create_app

    settings = load_settings()
    app = create_app(settings, fast_path=False)
    front = ReceiverFront(app.wsgi_app, settings, app.extensions["reach"].inbox, threads=2)
    try:
        large = contacts_csv(700_000)  # 16 MiB
        status, read = upload(front, large, [("authorization", "Bearer not-the-token")])
        assert status == 401
        assert read <= settings.max_body_bytes + 65536
        assert upload(front, large, [])[0] == 401
        operators = contacts_csv(10_000)  # above MAX_BODY_BYTES, read whole and imported
        assert upload(front, operators, [("authorization", f"Bearer {API_TOKEN}")]) == (200, len(operators))
    finally:
        front.close()
        app.extensions["reach"].close()
