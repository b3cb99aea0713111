"""The receiver's fast path: the two callbacks AT sends most (delivery reports, incoming SMS) answered without
Flask.

Per DLR, Flask's routing, request objects, form parsing, hooks and Flask-Limiter's own Redis call cost a few
times what the HTTP server itself spends (bench/RESULTS.md, section 1). This WSGI middleware sits in front
of the Flask app and takes only the happy path of `POST /dlr` and `POST /receiveSMS`: a form body of a known
length within MAX_BODY_BYTES, the right `?token=`, and fields that parse. It then counts the request in the
client's rate-limit windows (none while WEBHOOK_TOKEN is set: a callback carrying it is never limited; see
web/limits.py), queues the callback and sets the drainer's wake-up mark in one Redis script
(`Inbox.push_within`), shared with the requests this process is serving at the same moment
(web/group_commit.py), and answers exactly what the Flask view answers, with the same metrics.

Everything else goes on to Flask untouched (with the body it already read put back): other routes, JSON
bodies, a wrong token, a field that does not parse, a full window. So every refusal (its status, body,
headers and log line) has one source, the Flask app; tests/test_fastpath.py checks both paths answer alike.
Only a Redis failure is answered here (503, as the view would: the view would only wait on Redis again).
Used when REDIS_URL is set; the embedded mode's inbox is the database, and Flask serves it all.
"""

from __future__ import annotations

import functools
import io
import json
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

import werkzeug.urls  # noqa: F401  registers the "werkzeug.url_quote" codec error handler used below

from shared.callbacks import BadCallback, Dlr, IncomingSms, parse, storable_fields
from shared.inbox import Inbox, encode
from shared.settings import Settings
from shared.store import STORE_ERRORS
from web.auth import matches_any
from web.callbacks import UNAVAILABLE
from web.group_commit import GroupCommit
from web.limits import ClientWindows, open_callback_limit
from web.metrics import CALLBACKS, REQUEST_SECONDS, observe_many

log = logging.getLogger(__name__)

WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]
FORM = "application/x-www-form-urlencoded"
MAX_GOOD_QUERIES = 64


@dataclass(frozen=True)
class Route:
    kind: str  # the inbox kind and the `reach_callbacks` label
    model: type
    endpoint: str  # the Flask endpoint: rate-limit scope and metrics label

    def observe(self, started: float, outcome: str) -> None:
        _seconds(self.endpoint).observe(time.perf_counter() - started)
        _answered(self.kind, outcome).inc()


def observe_queued(answered: list[tuple[Route, float]]) -> None:
    """`route.observe(started, "queued")` for each (route, started) of a batch the async front queued, as one
    increment per series: in multiprocess mode every increment writes this process's file (and asks the
    kernel for the process id), three per callback when counted one by one."""
    now = time.perf_counter()
    durations: dict[Route, list[float]] = {}
    for route, started in answered:
        durations.setdefault(route, []).append(now - started)
    for route, seconds in durations.items():
        observe_many(_seconds(route.endpoint), seconds)
        _answered(route.kind, "queued").inc(len(seconds))


# The labelled series, looked up once per process rather than per request.
@functools.cache
def _seconds(endpoint: str) -> Any:
    return REQUEST_SECONDS.labels(endpoint, "POST")


@functools.cache
def _answered(kind: str, outcome: str) -> Any:
    return CALLBACKS.labels(kind, outcome)


@dataclass(frozen=True)
class Prepared:
    item_id: str
    payload: Any  # what `Inbox.push_within` queues (shared/inbox.py `encode`)
    windows: tuple[Any, ...]  # the client's rate-limit windows (web/limits.py)


#: The 503 a Redis failure gets, as the view answers it.
UNAVAILABLE_ANSWER = {"error": UNAVAILABLE}


def queued_answer(item_id: str) -> bytes:
    """The view's JSON for a queued callback (the id is hex: nothing to escape)."""
    return b'{"status":"queued","id":"%s"}\n' % item_id.encode()


ROUTES = {
    "/dlr": Route("dlr", Dlr, "callbacks.dlr"),
    "/receiveSMS": Route("sms", IncomingSms, "callbacks.receive_sms"),
}


class CallbackFastPath:
    def __init__(self, flask_wsgi: WsgiApp, settings: Settings, inbox: Inbox) -> None:
        self.flask_wsgi = flask_wsgi
        # Concurrent requests of this process share a round trip to Redis (web/group_commit.py).
        self.group = GroupCommit(inbox.push_within)
        self.tokens = settings.webhook_tokens
        self.good_queries: set[str] = set()  # query strings whose token matched
        self.max_body = settings.max_body_bytes
        # Only callbacks that pass the token check come this way: none is limited while WEBHOOK_TOKEN is set.
        self.windows = ClientWindows(open_callback_limit(settings))

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        started = time.perf_counter()
        taken = self.take(environ)
        if taken is None:
            return self.flask_wsgi(environ, start_response)
        with self.group.running():
            return self._handle(*taken, started, environ, start_response)

    def take(self, environ: dict[str, Any]) -> tuple[Route, int] | None:
        """The route and body length of a request the fast path takes (a form POST of an accepted length to
        /dlr or /receiveSMS with the right token), else None: Flask's."""
        route = ROUTES.get(environ.get("PATH_INFO", ""))
        length = self._form_length(environ) if route is not None else None
        if route is None or length is None or not self._token_ok(environ):
            return None
        return route, length

    def prepare(self, route: Route, body: bytes, length: int, environ: dict[str, Any]) -> Prepared | None:
        """What to queue for a body read whole: its inbox id and payload, and the client's rate-limit windows;
        None when the fields do not parse (Flask answers)."""
        fields = self._fields(body, length)
        try:
            if fields is None:
                raise BadCallback("not a form")
            parse(route.model, fields)
        except BadCallback:
            return None
        windows = self.windows.for_request(environ.get("REMOTE_ADDR"), route.endpoint)
        item_id, payload = encode(route.kind, storable_fields(fields))
        return Prepared(item_id, payload, windows)

    def _handle(
        self, route: Route, length: int, started: float, environ: dict[str, Any], start_response: Callable[..., Any]
    ) -> Iterable[bytes]:
        body = environ["wsgi.input"].read(length)
        prepared = self.prepare(route, body, length, environ)
        if prepared is None:
            return self._to_flask(environ, start_response, body)
        try:
            queued = self.group.submit((prepared.payload, prepared.windows))
        except STORE_ERRORS as exc:
            log.error("could not queue %s callback: %s", route.kind, exc)
            route.observe(started, "unavailable")
            return _json(start_response, "503 SERVICE UNAVAILABLE", UNAVAILABLE_ANSWER)
        if not queued:  # a full window: Flask-Limiter refuses it (429, Retry-After, its log line)
            return self._to_flask(environ, start_response, body)
        route.observe(started, "queued")
        answer = queued_answer(prepared.item_id)
        start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(answer)))])
        return [answer]

    def _form_length(self, environ: dict[str, Any]) -> int | None:
        """The body's length if this is a form POST of a declared length the app accepts, else None."""
        if environ.get("REQUEST_METHOD") != "POST":
            return None
        if environ.get("CONTENT_TYPE", "").partition(";")[0].strip().lower() != FORM:
            return None
        declared = environ.get("CONTENT_LENGTH", "")
        if not declared.isdigit() or not 0 < int(declared) <= self.max_body:
            return None  # chunked, empty or too large: Flask's answer
        return int(declared)

    def _token_ok(self, environ: dict[str, Any]) -> bool:
        if not self.tokens:
            return True
        raw = environ.get("QUERY_STRING", "")
        if raw in self.good_queries:  # AT sends the same query string every time
            return True
        try:  # as Werkzeug reads `request.args` (WSGI strings are Latin-1 for bytes)
            query = raw.encode("latin1").decode()
        except UnicodeError:
            return False
        given = form_fields(query)
        if not matches_any(given.get("token", ""), self.tokens):
            return False
        if len(self.good_queries) < MAX_GOOD_QUERIES:  # bounded: a client could vary the rest of it
            self.good_queries.add(raw)
        return True

    @staticmethod
    def _fields(body: bytes, length: int) -> dict[str, str] | None:
        """The form's fields as Werkzeug parses them (`request.form.to_dict()`), or None to let Flask say no."""
        if len(body) != length:
            return None  # the client went away mid-body
        try:
            text = body.decode()
        except UnicodeDecodeError:
            return None
        return form_fields(text)

    def _to_flask(self, environ: dict[str, Any], start_response: Callable[..., Any], body: bytes) -> Iterable[bytes]:
        environ["wsgi.input"] = io.BytesIO(body)
        return self.flask_wsgi(environ, start_response)


def form_fields(text: str) -> dict[str, str]:
    """A form body's (or query string's) fields as Werkzeug parses them (`request.form.to_dict()`: each name's
    first value; tests/test_fastpath.py checks they agree): `parse_qsl(text, keep_blank_values=True,
    errors="werkzeug.url_quote")` less its generic argument handling, unquoting only the pairs that need it."""
    fields: dict[str, str] = {}
    for pair in text.split("&"):
        if pair:
            name, _, value = pair.partition("=")
            if "%" in pair or "+" in pair:
                name, value = _unquote(name), _unquote(value)
            if name not in fields:
                fields[name] = value
    return fields


def _unquote(text: str) -> str:
    text = text.replace("+", " ")
    return unquote(text, errors="werkzeug.url_quote") if "%" in text else text


def flask_json(doc: dict[str, str]) -> bytes:
    """Flask's compact JSON: no spaces, keys in order, a final newline."""
    return (json.dumps(doc, ensure_ascii=True, separators=(",", ":")) + "\n").encode()


def _json(start_response: Callable[..., Any], status: str, doc: dict[str, str]) -> list[bytes]:
    body = flask_json(doc)
    start_response(status, [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]
