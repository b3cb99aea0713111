"""A deadline on each request body, so a client that trickles one cannot hold a connection slot (issue 12).

From the app's first read, a body has BODY_TIMEOUT_SECONDS to arrive, plus a second for every MIN_RATE bytes
it has delivered: a large upload (the operator API takes up to 32 MiB) is not cut off for being large, only
for arriving slower than MIN_RATE, while a trickle earns next to nothing. A read still waiting at the
deadline raises `BodyTooSlow`, which Flask answers 408 (web/errors.py) and after which gunicorn closes the
connection (a body whose read raised is never read on). The fast path (web/fastpath.py) reads its bodies
before Flask and hands a late one to Flask, whose read then fails at once.

Enforced under gevent (the production receiver: gunicorn's gevent workers, reach_cli/processes.py), where a
`gevent.Timeout` interrupts a read waiting on the socket however the client paces its bytes. A request's
line and headers are gunicorn's to bound: its gevent workers read them within the keep-alive time or close
the connection. Elsewhere (the tests' threaded server, the Flask test client) reads are left as they are.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import gevent
from gevent import monkey
from werkzeug.exceptions import RequestTimeout

log = logging.getLogger(__name__)

WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


class BodyTooSlow(RequestTimeout):
    """The body did not arrive in time: 408. An Exception (gevent's Timeout is a BaseException), so gunicorn
    marks the body failed and closes the connection rather than reading the rest of it."""


#: Bytes a second a body must keep up beyond BODY_TIMEOUT_SECONDS (512 kbit/s).
MIN_RATE = 64 * 1024
#: Reads are made in pieces of at most this, each given the time the bytes before it have earned.
PIECE = 64 * 1024


class DeadlineInput:
    """`wsgi.input` whose reads must keep up with the deadline above."""

    def __init__(self, stream: Any, seconds: float, request: str) -> None:
        self.stream = stream
        self.seconds = seconds
        self.request = request  # method and path, for the log line (never the query: it may hold the token)
        self.started: float | None = None
        self.received = 0
        self.expired = False

    def read(self, size: int | None = -1) -> bytes:
        wanted = size if size is not None and size >= 0 else None
        pieces = []
        while wanted is None or wanted > 0:
            piece = self._within(self.stream.read, PIECE if wanted is None else min(PIECE, wanted))
            if not piece:
                break
            pieces.append(piece)
            wanted = None if wanted is None else wanted - len(piece)
        return b"".join(pieces)

    def readline(self, size: int | None = -1) -> bytes:
        return self._within(self.stream.readline, -1 if size is None else size)

    def readlines(self, hint: int = -1) -> list[bytes]:
        lines, total = [], 0
        while line := self.readline():
            lines.append(line)
            total += len(line)
            if 0 < hint <= total:
                break
        return lines

    def __iter__(self) -> Iterator[bytes]:
        while line := self.readline():
            yield line

    def _within(self, read: Callable[[int], bytes], size: int) -> bytes:
        now = time.monotonic()
        if self.started is None:
            self.started = now
        remaining = self.started + self.seconds + self.received / MIN_RATE - now
        if self.expired or remaining <= 0:
            raise self._too_slow()
        try:
            with gevent.Timeout(remaining, BodyTooSlow):
                data = read(size)
        except BodyTooSlow:
            raise self._too_slow() from None
        self.received += len(data)
        return data

    def _too_slow(self) -> BodyTooSlow:
        if not self.expired:
            self.expired = True
            log.warning("%s: body too slow (%d bytes read in time); answering 408", self.request, self.received)
        return BodyTooSlow(f"request body too slow: {self.seconds:g} s allowed, then 1 s per 64 KiB")


def bounded(app: WsgiApp, seconds: float) -> WsgiApp:
    """`app` with a deadline on every request body when a gevent Timeout can interrupt a read (this process's
    socket module is gevent's); `app` itself otherwise."""
    return BodyDeadline(app, seconds) if monkey.is_module_patched("socket") else app


class BodyDeadline:
    """WSGI middleware giving every request's body a `DeadlineInput`."""

    def __init__(self, app: WsgiApp, seconds: float) -> None:
        self.app = app
        self.seconds = seconds

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        request = f"{environ.get('REQUEST_METHOD')} {environ.get('PATH_INFO')}"
        environ["wsgi.input"] = DeadlineInput(environ["wsgi.input"], self.seconds, request)
        return self.app(environ, start_response)
