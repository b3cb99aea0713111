"""The production receiver (granian and the async front, as reach_cli/processes.py runs it) on one kept-alive
connection: answers with and without a body follow each other whole and in order, each with its access line
in the production format."""

from __future__ import annotations

import re
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from reach_cli import processes
from tests.conftest import WEBHOOK_TOKEN, wait_for
from tests.services import ServiceProcess, command_env, free_port


@pytest.fixture(scope="module")
def production_receiver(environment: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, Any]]:
    port = free_port()
    command = processes.receiver(f"127.0.0.1:{port}", workers=1)
    web = ServiceProcess(tmp_path_factory.mktemp("server"), "web", command, command_env(), ready=b"Started worker")
    try:
        wait_for(lambda: _answers(port), timeout=30, what="the receiver answering")
        yield port, web
    finally:
        web.stop()


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2):
            return True
    except OSError:
        return False


def _exchange(sock: socket.socket, request: bytes, head_only: bool = False) -> bytes:
    """Send one request on a kept-alive connection and read exactly its response (head, then the body its
    Content-Length announces)."""
    sock.sendall(request)
    received = b""
    while b"\r\n\r\n" not in received:
        chunk = sock.recv(65536)
        assert chunk, f"closed after {received!r}"
        received += chunk
    head, _, body = received.partition(b"\r\n\r\n")
    length = 0 if head_only else int(_header(head, b"content-length"))
    while len(body) < length:
        chunk = sock.recv(65536)
        assert chunk, f"closed mid-body after {body!r}"
        body += chunk
    assert len(body) == length, f"more than the response: {body!r}"
    return head + b"\r\n\r\n" + body


def _header(head: bytes, name: bytes) -> bytes:
    for line in head.split(b"\r\n")[1:]:
        key, _, value = line.partition(b":")
        if key.strip().lower() == name:
            return value.strip()
    raise AssertionError(f"no {name!r} in {head!r}")


def test_responses_with_and_without_a_body_follow_each_other_on_one_connection(
    production_receiver: tuple[int, Any], clean: None
) -> None:
    """A held head must never be left behind: a HEAD answer (head only), an error page and a queued DLR, one
    after the other on one kept-alive connection, each arrive whole and in order."""
    port, web = production_receiver
    body = b"id=ATXid_held&status=Success&phoneNumber=%2B254711000001"
    dlr = (
        f"POST /dlr?token={WEBHOOK_TOKEN} HTTP/1.1\r\nHost: reach.test\r\n"
        f"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        head = _exchange(sock, b"HEAD /healthz HTTP/1.1\r\nHost: reach.test\r\n\r\n", head_only=True)
        assert head.startswith(b"HTTP/1.1 200 OK\r\n")
        missing = _exchange(sock, b"GET /nowhere HTTP/1.1\r\nHost: reach.test\r\n\r\n")
        assert missing.startswith(b"HTTP/1.1 404 ")  # the reason phrase is the server's
        queued = _exchange(sock, dlr)
        assert queued.startswith(b"HTTP/1.1 200 OK\r\n") and b'{"status":"queued","id":"' in queued
        again = _exchange(sock, b"HEAD /healthz HTTP/1.1\r\nHost: reach.test\r\n\r\n", head_only=True)
        assert again.startswith(b"HTTP/1.1 200 OK\r\n")
    wait_for(lambda: '"POST /dlr" 200 ' in web.log(), timeout=10, what="the DLR's access log line")
    assert WEBHOOK_TOKEN not in web.log()


def test_each_request_gets_one_access_line_in_the_production_format(
    production_receiver: tuple[int, Any], clean: None
) -> None:
    """`%(h)s "%(m)s %(U)s" %(s)s %(b)s %(M)sms` (reach_cli/processes.py ACCESS_LOG_FORMAT): the client, the
    method and path (never the query), the status, the body's bytes, the milliseconds."""
    port, web = production_receiver
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        _exchange(sock, f"GET /healthz?token={WEBHOOK_TOKEN} HTTP/1.1\r\nHost: reach.test\r\n\r\n".encode())
    line = re.compile(r'127\.0\.0\.1 "GET /healthz" 200 (\d+) (\d+)ms$', re.MULTILINE)
    found = wait_for(lambda: line.search(web.log()), timeout=10, what="the access line")
    assert int(found.group(1)) == len(b'{"status":"ok"}\n')
    assert WEBHOOK_TOKEN not in web.log()


def test_a_stop_while_the_workers_load_the_app_stops_them_at_once(environment: None, tmp_path: Path) -> None:
    """SIGTERM as the receiver starts (`reach up` stopped at once, a deploy rolled back): workers still
    loading the app must stop too, not be killed only after the graceful timeout (20 s) for want of hearing
    it; `reach up` would otherwise leave them running that long after it died."""
    port = free_port()
    command = processes.receiver(f"127.0.0.1:{port}", workers=2)
    web = ServiceProcess(tmp_path, "web", command, command_env(), ready=b"Spawning worker-2")
    began = time.monotonic()
    web.process.terminate()
    try:
        web.process.wait(timeout=10)
    finally:
        web.stop()
    assert time.monotonic() - began < 10
    assert "refused to gracefully stop" not in web.log()
