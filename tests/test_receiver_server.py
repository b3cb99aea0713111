"""The receiver's own gunicorn worker and logger classes (web/gunicorn_worker.py, web/gunicorn_log.py): each
cuts a cost per request and must change nothing a client or an operator sees."""

from __future__ import annotations

import datetime
import socket
from collections.abc import Iterator
from typing import Any

import pytest
from gunicorn import glogging
from gunicorn.config import Config

from reach_cli import processes
from tests.conftest import WEBHOOK_TOKEN, wait_for
from tests.services import ServiceProcess, command_env, free_port
from web.gunicorn_log import Logger
from web.gunicorn_worker import HeldHead

# -- one send per response -----------------------------------------------------------------------------------


class Wire:
    """The socket under `HeldHead`: what reached it, one entry per call."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, bytes]] = []

    def sendall(self, data: bytes, *_flags: int) -> None:
        self.calls.append(("sendall", bytes(data)))

    def shutdown(self, _how: int) -> None:
        self.calls.append(("shutdown", b""))


def test_a_response_head_goes_out_with_the_first_body_part() -> None:
    wire = Wire()
    out = HeldHead(wire)
    out.sendall(b"HTTP/1.1 200 OK\r\n\r\n")
    assert wire.calls == []
    out.sendall(b"body 1")
    out.sendall(memoryview(b"body 2"))
    out.flush()
    assert wire.calls == [("sendall", b"HTTP/1.1 200 OK\r\n\r\nbody 1"), ("sendall", b"body 2")]


def test_a_held_head_goes_out_before_anything_else_and_at_the_end() -> None:
    wire = Wire()
    out = HeldHead(wire)
    out.sendall(b"HTTP/1.1 500 INTERNAL SERVER ERROR\r\n\r\n")
    out.shutdown(socket.SHUT_RDWR)  # gunicorn after an error: the head must not be lost behind it
    assert wire.calls == [("sendall", b"HTTP/1.1 500 INTERNAL SERVER ERROR\r\n\r\n"), ("shutdown", b"")]

    wire = Wire()
    out = HeldHead(wire)
    out.sendall(b"HTTP/1.1 204 NO CONTENT\r\n\r\n")
    out.flush()  # the end of a request: a response of head only
    out.flush()
    assert wire.calls == [("sendall", b"HTTP/1.1 204 NO CONTENT\r\n\r\n")]


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


# -- the access log's atoms -------------------------------------------------------------------------------------


class _Request:
    headers = [("HOST", "reach.test"), ("AUTHORIZATION", "Basic dXNlcjpwYXNz"), ("X-REAL-IP", "10.0.0.9")]


class _Response:
    status = '404 NOT "FOUND"'  # a quote to escape
    sent = 207
    headers = [("Content-Type", "application/json")]


ENVIRON = {
    "REQUEST_METHOD": "POST",
    "PATH_INFO": '/dlr/"quoted"',
    "QUERY_STRING": "token=secret",
    "RAW_URI": "/dlr?token=secret",
    "SERVER_PROTOCOL": "HTTP/1.1",
    "REMOTE_ADDR": "127.0.0.1",
    "HTTP_AUTHORIZATION": "Basic dXNlcjpwYXNz",
}
TOOK = datetime.timedelta(seconds=1, microseconds=234567)


def _line(logger_class: type[glogging.Logger], fmt: str) -> str:
    cfg = Config()
    cfg.set("access_log_format", fmt)
    logger = logger_class(cfg)
    return fmt % logger.atoms_wrapper_class(logger.atoms(_Response, _Request, ENVIRON, TOOK))


@pytest.mark.parametrize(
    "fmt",
    [
        processes.ACCESS_LOG_FORMAT,
        '%(h)s %(l)s "%(m)s %(U)s?%(q)s %(H)s" %(s)s %(b)s %(B)s %(T)s %(D)s %(M)s %(L)s',
        # Atoms only gunicorn's full set has (a request header, the user, the request line): its own atoms.
        '%({x-real-ip}i)s %(u)s "%(r)s" %(s)s %(a)s',
    ],
)
def test_the_access_line_is_gunicorns_own(fmt: str) -> None:
    assert _line(Logger, fmt) == _line(glogging.Logger, fmt)


def test_the_production_format_builds_only_its_atoms() -> None:
    cfg = Config()
    cfg.set("access_log_format", processes.ACCESS_LOG_FORMAT)
    atoms = Logger(cfg).atoms(_Response, _Request, ENVIRON, TOOK)
    assert sorted(atoms) == ["M", "U", "b", "h", "m", "s"]
