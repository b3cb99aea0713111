"""The receiver's async front: an RSGI app for granian (`python -m web.serve`, reach_cli/processes.py).

RSGI (granian's own interface) rather than ASGI: no message dicts made and read per request, the answer handed
over in one call, and granian runs its Rust side on one thread per worker; the receiver spent 0.85x the CPU per
DLR end to end (median of 9 rounds, 0.71-1.02x: `python -m bench.e2e --size small --compare` against the ASGI
front on a shared machine; issue 15).

Each worker process runs one event loop. On it:

- every request's body is read under the body deadline (web/front_bodies.py) before any thread is involved,
  so a client trickling a body or its headers (granian bounds those: `--http1-header-read-timeout`) holds a
  connection, never a thread, and is answered 408 at the same bound as under gunicorn (issue 12);
- the happy path of `POST /dlr` and `POST /receiveSMS` is answered right there, by the same rules as the
  WSGI fast path (web/fastpath.py: token, form length, parse, rate-limit windows), its Redis push shared by
  the callbacks arriving meanwhile (web/async_group.py), with the same metrics and the same answer bytes;
- everything else (other routes, refusals, the embedded mode's every request) is handed, body read, to the
  Flask app in a bounded pool of threads (web/wsgi_bridge.py), which answers it as it always has.

It writes the access line gunicorn wrote (web/access_log.py: the path, never the query), through Reach's
redacting log handler.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from granian.rsgi import ProtocolClosed
from werkzeug.middleware.proxy_fix import ProxyFix

from shared.inbox import Inbox, Window
from shared.settings import Settings
from shared.store import STORE_ERRORS
from web.access_log import access_log
from web.async_group import AsyncGroupCommit
from web.async_push import AsyncPush
from web.auth import bearer_matches
from web.bodies import MALFORMED_CHUNKED
from web.body_deadline import log as body_log
from web.fastpath import UNAVAILABLE_ANSWER, CallbackFastPath, Route, flask_json, observe_queued, queued_answer
from web.front_bodies import ReadBody, read_body
from web.operator_api import MAX_UPLOAD_BYTES
from web.operator_api import bp as operator_bp
from web.wsgi_bridge import WsgiAnswer, WsgiApp, environ_for, next_part, start_wsgi

log = logging.getLogger(__name__)

#: Threads per worker process for the Flask app (views wait on Postgres and Redis): `web.serve --threads`.
THREADS_VARIABLE = "REACH_RECEIVER_THREADS"
DEFAULT_THREADS = 16
JSON_HEADERS = [("content-type", "application/json")]


class ReceiverFront:
    def __init__(self, flask_wsgi: WsgiApp, settings: Settings, inbox: Inbox | None, threads: int) -> None:
        """`flask_wsgi`: the app without its WSGI fast path; `inbox`: the Redis inbox (None: embedded mode, Flask
        answers everything)."""
        self.flask_wsgi = flask_wsgi
        # The fast path's rules (web/fastpath.py); its pushes go through this loop's group commit.
        self.fast_path = CallbackFastPath(flask_wsgi, settings, inbox) if inbox is not None else None
        self.push = AsyncPush(inbox, settings.redis_url) if inbox is not None else None  # on this loop
        self.group = AsyncGroupCommit(self._push_and_count) if self.push is not None else None
        # The client address behind trusted proxies, for the fast path's rate-limit windows (Flask's own
        # ProxyFix is in `flask_wsgi`).
        n = settings.trusted_proxies
        self.proxied = ProxyFix(_environ_only, x_for=n, x_proto=n) if n else None
        self.seconds = settings.body_timeout_seconds
        self.pool = ThreadPoolExecutor(threads, thread_name_prefix="flask")
        # The most body a route may take: operator uploads under /api/, otherwise MAX_BODY_BYTES (Flask answers
        # 413 past its own limit; the front stops reading one byte past it).
        self.upload_prefix = f"{operator_bp.url_prefix}/"
        self.api_tokens = settings.api_tokens
        self.caps = (max(MAX_UPLOAD_BYTES, settings.max_body_bytes), settings.max_body_bytes)

    async def __rsgi__(self, scope: Any, proto: Any) -> None:
        """One HTTP request (granian serves no websockets here: `web.serve`)."""
        started = time.perf_counter()
        environ = environ_for(scope)
        taken = self.fast_path.take(environ) if self.fast_path is not None else None
        chunked = "wsgi.input_terminated" in environ
        body = await read_body(proto, _declared_length(environ, chunked), self._cap(environ, taken), self.seconds)
        try:
            if not body.complete:
                self._note_incomplete(environ, body)
            if body.broken and chunked:
                # Answered here, at once: granian drops the connection soon after a framing error.
                answer = _json_answer(400, flask_json({"error": MALFORMED_CHUNKED}))
            elif taken and body.complete:
                # The client's address as the trusted proxies saw it (ProxyFix gives the same again if Flask
                # answers after all), also for the access line.
                client = self.proxied(environ, None) if self.proxied is not None else environ
                answer = await self._fast(*taken, body, client, started)
            else:
                answer = None
            if answer is not None:
                proto.response_bytes(answer.status, _closing(answer.headers, body.keeps_connection), answer.body)
                status, size = answer.status, len(answer.body)
            else:
                status, size = await self._send_flask(environ, body.wsgi_input(chunked, self.seconds), proto, body)
        finally:
            body.close()
        size = size if environ["REQUEST_METHOD"] != "HEAD" else 0
        access_log.write(environ, status, size, started, asyncio.get_running_loop())

    async def _send_flask(
        self, environ: dict[str, Any], wsgi_input: Any, proto: Any, body: ReadBody
    ) -> tuple[int, int]:
        """Flask's answer, run in the pool and sent part by part as it is made (a CSV export streams)."""
        loop = asyncio.get_running_loop()
        stream = await loop.run_in_executor(self.pool, start_wsgi, self.flask_wsgi, environ, wsgi_input)
        try:
            transport = proto.response_stream(stream.status, _closing(stream.headers, body.keeps_connection))
            size, part = 0, stream.first
            while part:  # each part out as soon as the app has made it
                try:
                    await transport.send_bytes(part)
                except ProtocolClosed:  # the client went away, or a HEAD request's answer has no body
                    break
                size += len(part)
                part = await loop.run_in_executor(self.pool, next_part, stream.parts)
        finally:
            await loop.run_in_executor(self.pool, stream.close)
        return stream.status, size

    def _cap(self, environ: dict[str, Any], taken: tuple[Route, int] | None) -> int:
        """The most of this body the front reads: a callback's form limit, an operator's upload limit (only with
        the operator's token: a stranger's upload is refused by Flask before its body is read, so it need not be
        read past the ordinary limit either), else MAX_BODY_BYTES."""
        if taken is not None:
            return taken[1]
        upload = environ["PATH_INFO"].startswith(self.upload_prefix)
        if upload and bearer_matches(environ.get("HTTP_AUTHORIZATION", ""), self.api_tokens):
            return self.caps[0]
        return self.caps[1]

    def _note_incomplete(self, environ: dict[str, Any], body: ReadBody) -> None:
        request = f"{environ['REQUEST_METHOD']} {environ['PATH_INFO']}"
        if body.too_slow:
            body_log.warning("%s: body too slow (%d bytes read in time); answering 408", request, body.size)
        elif body.broken:
            log.info("%s: the body's framing broke or the client went away after %d bytes", request, body.size)

    async def _fast(
        self, route: Route, length: int, body: ReadBody, environ: dict[str, Any], started: float
    ) -> WsgiAnswer | None:
        """The fast path's answer to a callback read whole, or None for Flask to answer it."""
        assert self.fast_path is not None and self.group is not None
        prepared = self.fast_path.prepare(route, body.bytes(), length, environ)
        if prepared is None:
            return None
        try:
            queued = await self.group.submit((prepared.payload, prepared.windows, route, started))
        except STORE_ERRORS as exc:
            log.error("could not queue %s callback: %s", route.kind, exc)
            route.observe(started, "unavailable")
            return _json_answer(503, flask_json(UNAVAILABLE_ANSWER))
        if not queued:  # a full window: Flask-Limiter refuses it (429, Retry-After, its log line)
            return None
        return _json_answer(200, queued_answer(prepared.item_id))  # its metrics written with its batch's

    async def _push_and_count(self, batch: Sequence[tuple[str, Sequence[Window], Route, float]]) -> list[bool]:
        """Push a batch (web/async_push.py), then count those queued in the metrics as `Route.observe` would,
        one write per series for the lot (web/fastpath.py `observe_queued`), before any of them is answered."""
        assert self.push is not None
        queued = await self.push([(payload, windows) for payload, windows, _, _ in batch])
        observe_queued([(route, started) for (_, _, route, started), ok in zip(batch, queued, strict=True) if ok])
        return queued

    def __rsgi_init__(self, loop: asyncio.AbstractEventLoop) -> None:
        """granian's, as a worker starts: nothing to do (the Redis connection is made on the first push)."""

    def __rsgi_del__(self, loop: asyncio.AbstractEventLoop) -> None:
        """granian's, after the worker's last request, its loop stopped: the shutdown, on that loop."""
        loop.run_until_complete(self.aclose())

    async def aclose(self) -> None:
        """After the last request, on the loop: close the Redis connection, then `close()`."""
        access_log.flush()
        if self.push is not None:
            await self.push.aclose()
        self.close()

    def close(self) -> None:
        """Let the threads finish, and mark this process's metrics files dead."""
        self.pool.shutdown(wait=True)
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            from prometheus_client import multiprocess

            multiprocess.mark_process_dead(os.getpid())


def _environ_only(environ: dict[str, Any], _start_response: Any) -> dict[str, Any]:
    return environ


def _closing(headers: list[tuple[str, str]], keep: bool) -> list[tuple[str, str]]:
    """The answer's headers, with `connection: close` when the body was not read to its end."""
    return headers if keep else [*headers, ("connection", "close")]


def _declared_length(environ: dict[str, Any], chunked: bool) -> int | None:
    """The body's length as its headers give it (no Content-Length and not chunked: none), None if chunked.
    granian refuses a request whose Content-Length is not a number."""
    return None if chunked else int(environ.get("CONTENT_LENGTH") or 0)


def _json_answer(status: int, body: bytes) -> WsgiAnswer:
    return WsgiAnswer(status, [*JSON_HEADERS, ("content-length", str(len(body)))], body)


def create_front() -> ReceiverFront:
    """granian's factory (`web.front:create_front`): the Flask app of `web.create_app()` behind the front."""
    from shared.logs import configure_logging
    from shared.settings import get_settings
    from web import create_app

    # Until granian sets this worker's own handlers (after this factory returns), SIGTERM would reach the main
    # process's handler, inherited across the fork, and be lost: a stop while the app loads would leave the
    # worker to be killed only after the graceful timeout. Serving nothing yet, it may just end.
    for stop in (signal.SIGTERM, signal.SIGINT):
        signal.signal(stop, signal.SIG_DFL)
    # Read anew: the main process read them before it forked this worker, and a worker a SIGHUP starts must take
    # the project's .env as it is now (a rotated WEBHOOK_TOKEN; web/serve.py checks they load first).
    get_settings.cache_clear()
    settings = get_settings()
    app = create_app(settings, fast_path=False)  # the front takes the fast path itself
    configure_logging(settings.log_level)  # the app has read the settings: they are valid
    inbox = app.extensions["reach"].inbox if settings.uses_redis else None
    threads = int(os.environ.get(THREADS_VARIABLE, DEFAULT_THREADS))
    return ReceiverFront(app.wsgi_app, settings, inbox, threads)
