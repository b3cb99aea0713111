"""The production receiver (granian and Reach's async front, as reach_cli/processes.py runs it) against hostile
clients (issue 12): bodies and headers trickled a byte at a time hold a connection no longer than their
bound and never a thread, while AT's callbacks and the Flask routes are still answered at once; a token sent
in a malformed request never reaches the log.

One receiver for the module, with short bounds (BODY_TIMEOUT_SECONDS and the header timeout of 2 s) so the
trickles take seconds, and one worker process with two Flask threads: fewer than the trickles whose bodies a
Flask view would read, so a trickle that held a thread would starve the rest.
"""

from __future__ import annotations

import json
import select
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import requests

from reach_cli import processes
from tests.conftest import API_TOKEN, WEBHOOK_TOKEN, wait_for
from tests.services import ServiceProcess, command_env, free_port

BODY_BOUND = 2.0  # BODY_TIMEOUT_SECONDS of this module's receiver
HEADER_BOUND = 2  # the time the receiver gives a request's line and headers
SLACK = 1.5  # scheduling on a busy 2-core machine
TRICKLE_EVERY = 0.25  # one byte per this many seconds
GIVE_UP = 12.0  # a trickle still open after this long was never cut off
DLR = {"id": "ATXid_hostile", "status": "Success", "phoneNumber": "+254711000001"}


@dataclass
class Receiver:
    url: str
    port: int
    process: ServiceProcess


@pytest.fixture(scope="module")
def server(environment: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Receiver]:
    port = free_port()
    command = processes.receiver(f"127.0.0.1:{port}", workers=1, threads=2, header_timeout=HEADER_BOUND)
    env = command_env(BODY_TIMEOUT_SECONDS=str(BODY_BOUND))
    web = ServiceProcess(tmp_path_factory.mktemp("hostile"), "web", command, env, ready=b"Started worker")
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: _healthy(url), timeout=30, what="the receiver answering /healthz")
        yield Receiver(url, port, web)
    finally:
        web.stop()


def _healthy(url: str) -> bool:
    try:
        return requests.get(f"{url}/healthz", timeout=2).status_code == 200
    except requests.RequestException:
        return False


# -- slow bodies and headers ---------------------------------------------------------------------------------


@dataclass
class Trickle:
    """A request whose `head` is sent at once and the rest one byte at a time, and what became of it."""

    label: str
    head: bytes
    answer: bytes  # how the answer's status line starts; b"" when the connection is to close unanswered
    answered_within: float
    closed_within: float
    status_line: bytes = b""
    answered_after: float | None = None
    closed_after: float | None = None


def _post(target: str, content_type: str, *headers: str, length: int = 1000) -> bytes:
    lines = [f"POST {target} HTTP/1.1", "Host: reach.test", f"Content-Type: {content_type}", *headers]
    lines.append("Transfer-Encoding: chunked" if length < 0 else f"Content-Length: {length}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


FORM, JSON = "application/x-www-form-urlencoded", "application/json"
BODY_CUT = BODY_BOUND + SLACK
TRICKLES = [
    # A delivery report with the right token (the fast path reads it before Flask).
    Trickle("dlr", _post(f"/dlr?token={WEBHOOK_TOKEN}", FORM), b"HTTP/1.1 408", BODY_CUT, BODY_CUT),
    # A voice callback on /communicate with the right token: its body may be read, within the bound.
    Trickle(
        "communicate voice", _post(f"/communicate?token={WEBHOOK_TOKEN}", JSON), b"HTTP/1.1 408", BODY_CUT, BODY_CUT
    ),
    # No credentials: refused (401) once the body's bound has passed; no thread waited for it meanwhile.
    Trickle("communicate stranger", _post("/communicate", JSON), b"HTTP/1.1 401", BODY_CUT, BODY_CUT),
    # The sign-in form carries its credential in the body: it cannot be checked first, only bounded.
    Trickle(
        "dashboard login",
        _post("/dashboard/login", FORM, "Origin: http://reach.test"),
        b"HTTP/1.1 408",
        BODY_CUT,
        BODY_CUT,
    ),
    Trickle(
        "contacts upload",
        _post("/api/contacts", "text/csv", f"Authorization: Bearer {API_TOKEN}"),
        b"HTTP/1.1 408",
        BODY_CUT,
        BODY_CUT,
    ),
    # A chunked body whose first chunk (1 KiB) never ends.
    Trickle(
        "chunked voice",
        _post(f"/voice?token={WEBHOOK_TOKEN}", FORM, length=-1) + b"400\r\n",
        b"HTTP/1.1 408",
        BODY_CUT,
        BODY_CUT,
    ),
    # Slowloris: the headers never end.
    Trickle(
        "slow headers",
        f"POST /dlr?token={WEBHOOK_TOKEN} HTTP/1.1\r\nHost: reach.test\r\nX-Slow: ".encode(),
        b"",
        HEADER_BOUND + SLACK,
        HEADER_BOUND + SLACK,
    ),
]


def _trickle(port: int, trickle: Trickle, started: threading.Event) -> None:
    """Send the head, then a byte every TRICKLE_EVERY seconds until the server answers and closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(trickle.head)
        began = time.monotonic()
        started.set()
        received = b""
        while time.monotonic() - began < GIVE_UP:
            try:
                sock.sendall(b"1")
                readable, _, _ = select.select([sock], [], [], TRICKLE_EVERY)
                data = sock.recv(65536) if readable else None
            except OSError:  # reset or broken pipe: the server closed it
                data = b""
            if data is None:
                continue
            now = time.monotonic() - began
            if not data:
                trickle.closed_after = now
                break
            if trickle.answered_after is None:
                trickle.answered_after = now
            received += data
        trickle.status_line = received.split(b"\r\n", 1)[0]


def test_trickled_bodies_and_headers_are_cut_off_while_callbacks_are_answered(server: Receiver, clean: None) -> None:
    """Each trickle is answered (408, or 401 for want of credentials) or closed within its bound; a delivery
    report and a Flask route sent meanwhile are answered at once."""
    for trickle in TRICKLES:
        trickle.answered_after = trickle.closed_after = None
    started = [threading.Event() for _ in TRICKLES]
    threads = [
        threading.Thread(target=_trickle, args=(server.port, trickle, event), daemon=True)
        for trickle, event in zip(TRICKLES, started, strict=True)
    ]
    for thread in threads:
        thread.start()
    wait_for(lambda: all(event.is_set() for event in started), timeout=10, what="every trickle started")

    before = time.monotonic()
    answer = requests.post(f"{server.url}/dlr", params={"token": WEBHOOK_TOKEN}, data=DLR, timeout=BODY_BOUND)
    assert answer.status_code == 200 and answer.json()["status"] == "queued"
    assert time.monotonic() - before < 1.0
    # A route of the Flask app, which runs on the two threads: none is held by a trickle.
    before = time.monotonic()
    assert requests.get(f"{server.url}/healthz", timeout=BODY_BOUND).status_code == 200
    assert time.monotonic() - before < 1.0

    for thread in threads:
        thread.join(GIVE_UP + 5)
    problems = [problem for trickle in TRICKLES if (problem := _outcome(trickle))]
    assert not problems, "; ".join(problems)
    # Each cut is a line of Reach's own log, in Reach's format (its redacting handler, in the server process too).
    assert "WARNING web.body_deadline: POST /dlr: body too slow" in server.process.log()
    # Once they are cut off, a body sent whole is still accepted on the same worker.
    again = requests.post(f"{server.url}/dlr", params={"token": WEBHOOK_TOKEN}, data=DLR, timeout=BODY_BOUND)
    assert again.status_code == 200


def _outcome(trickle: Trickle) -> str:
    """What went wrong with one trickle, or "" when it was answered and closed within its bounds."""
    if trickle.closed_after is None:
        return f"{trickle.label}: still open after {GIVE_UP} s"
    if trickle.closed_after > trickle.closed_within:
        return f"{trickle.label}: closed after {trickle.closed_after:.1f} s"
    if not trickle.status_line.startswith(trickle.answer):
        return f"{trickle.label}: answered {trickle.status_line!r}"
    if trickle.answer and trickle.answered_after > trickle.answered_within:  # type: ignore[operator]
        return f"{trickle.label}: answered after {trickle.answered_after:.1f} s"
    return ""


def test_a_large_body_at_a_fair_pace_is_read_whole(server: Receiver) -> None:
    """The bound is on pace, not size: an operator's 1 MiB upload that takes longer than BODY_TIMEOUT_SECONDS,
    at several times the minimum rate (64 KiB/s), is read to the end and answered."""
    body = json.dumps("x" * (1024 * 1024)).encode()  # a JSON string where a list goes: a quick 400 once read
    head = _post("/api/contacts", JSON, f"Authorization: Bearer {API_TOKEN}", length=len(body))
    piece, pieces = 64 * 1024, -(-len(body) // (64 * 1024))
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(head)
        began = time.monotonic()
        for offset in range(0, len(body), piece):
            sock.sendall(body[offset : offset + piece])
            time.sleep((BODY_BOUND + 0.5) / pieces)  # the pace: ~400 KiB/s, over more than the bound
        took = time.monotonic() - began
        status_line = sock.recv(65536).split(b"\r\n", 1)[0]
    assert took > BODY_BOUND
    assert status_line.startswith(b"HTTP/1.1 400 ")


# -- the logs ------------------------------------------------------------------------------------------------


def _send_raw(port: int, raw: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(raw)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    return answer


def test_a_malformed_request_line_is_refused_and_its_token_never_logged(server: Receiver) -> None:
    """A request line the server cannot parse is answered 400 (granian does not log it: nothing of it, the
    token least of all, reaches the log); the same connection's next request is never read from it."""
    no_version = f"POST /dlr?token={WEBHOOK_TOKEN}\r\nHost: reach.test\r\n\r\n"
    control_character = f"POST /dlr?token={WEBHOOK_TOKEN}&x=\x01 HTTP/1.1\r\nHost: reach.test\r\n\r\n"
    for request in (no_version, control_character):
        assert _send_raw(server.port, request.encode()).startswith(b"HTTP/1.1 400")
    # A request after them is logged, so the log is written up to here.
    requests.get(f"{server.url}/nowhere-after-the-bad-lines", timeout=5)
    wait_for(lambda: '"GET /nowhere-after-the-bad-lines" 404' in server.process.log(), timeout=10, what="the line")
    assert WEBHOOK_TOKEN not in server.process.log()


def test_a_token_in_the_path_is_not_in_the_access_log(server: Receiver) -> None:
    """The access log shows the path (never the query); a client that puts a secret in the path itself still
    does not get it written down."""
    answer = requests.post(f"{server.url}/dlr/{WEBHOOK_TOKEN}", data=DLR, timeout=5)
    assert answer.status_code == 404
    wait_for(lambda: '"POST /dlr/***" 404' in server.process.log(), timeout=10, what="the access log line")
    assert WEBHOOK_TOKEN not in server.process.log()
