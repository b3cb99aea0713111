"""Posting callbacks: a form body to the receiver over one keep-alive HTTP/1.1 connection per sender thread.

Plain `http.client`, not `requests`: a cycle of a million messages has the simulator post a million delivery
reports, and `requests` spent about 1.3 ms of CPU on each (preparing the request, looking for a `.netrc`,
its connection pool) against 0.24 ms here, on a machine the receiver, worker and Postgres share.

Errors read as `requests` words them (`ConnectionError: ...`, `ReadTimeout: ...`), so the callback log
says the same as before; the URL in them carries the webhook token, which the caller redacts.
"""

from __future__ import annotations

import http.client
import threading
from dataclasses import dataclass
from urllib.parse import urlencode, urlsplit


class CallbackError(Exception):
    """A post that got no HTTP answer; its text names the failure as `requests` would."""


@dataclass(frozen=True)
class Answer:
    status: int
    text: str
    #: The URL posted to, query string included.
    url: str


#: Errors of a kept-alive connection the receiver closed in between: the post is sent again on a new one.
STALE_CONNECTION = (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError)


class CallbackPoster:
    """Posts to `base_url`'s host; each thread keeps its own connection (http.client is not thread-safe)."""

    def __init__(self, base_url: str, timeout: tuple[float, float]) -> None:
        parts = urlsplit(base_url)
        self._https = parts.scheme == "https"
        self._host = parts.hostname or "127.0.0.1"
        self._port = parts.port or (443 if self._https else 80)
        self._origin = f"{parts.scheme}://{parts.netloc}"
        self._base_path = parts.path.rstrip("/")
        self._connect_timeout, self._read_timeout = timeout
        self._local = threading.local()
        self._lock = threading.Lock()
        self._connections: set[http.client.HTTPConnection] = set()

    def post(self, kind: str, form: dict[str, str], params: dict[str, str] | None) -> Answer:
        """POST `form` to `<base>/<kind>?<params>`; the answer, or CallbackError when none came."""
        target = f"{self._base_path}/{kind}" + (f"?{urlencode(params)}" if params else "")
        url = self._origin + target
        body = urlencode(form).encode()
        reused = getattr(self._local, "connection", None) is not None
        try:
            return self._exchange(target, url, body)
        except STALE_CONNECTION as exc:
            error: Exception = exc
        if reused:  # the receiver closed a kept-alive connection: once more, on a new one
            try:
                return self._exchange(target, url, body)
            except STALE_CONNECTION as exc:
                error = exc
        raise CallbackError(f"ConnectionError: {type(error).__name__}: {error} ({url})")

    def close(self) -> None:
        with self._lock:
            connections, self._connections = self._connections, set()
        for connection in connections:
            connection.close()

    def _exchange(self, target: str, url: str, body: bytes) -> Answer:
        connection = self._connection(url)
        try:
            connection.request("POST", target, body, {"Content-Type": "application/x-www-form-urlencoded"})
            resp = connection.getresponse()
            text = resp.read().decode(resp.headers.get_content_charset() or "utf-8", "replace")
        except STALE_CONNECTION:
            self._drop(connection)
            raise
        except TimeoutError as exc:
            self._drop(connection)
            raise CallbackError(f"ReadTimeout: no answer within {self._read_timeout} s ({url}): {exc}") from None
        except (OSError, http.client.HTTPException) as exc:
            self._drop(connection)
            raise CallbackError(f"ConnectionError: {type(exc).__name__}: {exc} ({url})") from None
        if resp.will_close:
            self._drop(connection)
        return Answer(resp.status, text, url)

    def _connection(self, url: str) -> http.client.HTTPConnection:
        connection: http.client.HTTPConnection | None = getattr(self._local, "connection", None)
        if connection is not None:
            return connection
        kind = http.client.HTTPSConnection if self._https else http.client.HTTPConnection
        connection = kind(self._host, self._port, timeout=self._connect_timeout)
        try:
            connection.connect()
        except TimeoutError as exc:
            raise CallbackError(f"ConnectTimeout: {exc} ({url})") from None
        except OSError as exc:
            raise CallbackError(f"ConnectionError: {type(exc).__name__}: {exc} ({url})") from None
        assert connection.sock is not None
        connection.sock.settimeout(self._read_timeout)
        self._local.connection = connection
        with self._lock:
            self._connections.add(connection)
        return connection

    def _drop(self, connection: http.client.HTTPConnection) -> None:
        connection.close()
        self._local.connection = None
        with self._lock:
            self._connections.discard(connection)
