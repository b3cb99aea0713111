"""The Flask app (WSGI) called from the async front (web/front.py): an environ built from granian's RSGI scope,
and the app run to its last byte in a worker thread, with the body already read (web/front_bodies.py).

The environ is what a WSGI server gives (PEP 3333): the path unquoted and as Latin-1 text (granian unquotes
it, as UTF-8), the query string as sent, `HTTP_*` headers (repeated ones joined with commas, as gunicorn
does), CONTENT_TYPE and CONTENT_LENGTH without the prefix. The response goes out part by part as the app
yields it (`start_wsgi`, then `next_part` until None): a cycle's CSV export is a generator of pages, so a
million contacts never sit in memory (shared/cycle_export.py).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import IO, Any

_UNPREFIXED = frozenset({"CONTENT_TYPE", "CONTENT_LENGTH"})
WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


def environ_for(scope: Any) -> dict[str, Any]:
    """The WSGI environ of an RSGI HTTP request (`scope`: granian's), its `wsgi.input` still to be set."""
    server_name, _, server_port = scope.server.rpartition(":")
    client_address, _, client_port = scope.client.rpartition(":")
    path = scope.path
    environ: dict[str, Any] = {
        "REQUEST_METHOD": scope.method,
        "SCRIPT_NAME": "",
        "PATH_INFO": path if path.isascii() else path.encode("utf-8").decode("latin-1"),
        "QUERY_STRING": scope.query_string,
        "SERVER_NAME": server_name.strip("[]"),  # an IPv6 address comes bracketed
        "SERVER_PORT": server_port,
        "SERVER_PROTOCOL": f"HTTP/{scope.http_version}",
        "REMOTE_ADDR": client_address.strip("[]"),
        "REMOTE_PORT": client_port,
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": scope.scheme,
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": True,
        "wsgi.multiprocess": True,
        "wsgi.run_once": False,
    }
    for raw_name, value in scope.headers.items():
        name = raw_name.upper().replace("-", "_")
        key = name if name in _UNPREFIXED else "HTTP_" + name
        environ[key] = f"{environ[key]},{value}" if key in environ else value
    if "chunked" in environ.get("HTTP_TRANSFER_ENCODING", "").lower():
        environ["wsgi.input_terminated"] = True  # no length: read to the end
    return environ


@dataclass
class WsgiAnswer:
    status: int
    headers: list[tuple[str, str]]
    body: bytes


@dataclass
class WsgiStream:
    """A WSGI response under way: its status and headers, its first part, and the rest still to be made."""

    status: int
    headers: list[tuple[str, str]]
    first: bytes
    parts: Iterator[bytes]
    result: Iterable[bytes]

    def close(self) -> None:
        close_result(self.result)


def start_wsgi(app: WsgiApp, environ: dict[str, Any], body: IO[bytes]) -> WsgiStream:
    """Run `app` on `environ` with `body` as its input up to its first non-empty part (in a worker thread):
    a WSGI app may call `start_response` only then. The caller sends the rest (`next_part`) and closes it."""
    environ["wsgi.input"] = body
    started: list[Any] = []
    written: list[bytes] = []  # the legacy `write()` callable's bytes, sent first

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Callable[[bytes], None]:
        if exc_info is not None and started:
            raise exc_info[1].with_traceback(exc_info[2])
        started[:] = [status, headers]
        return written.append

    result = app(environ, start_response)
    parts = iter(result)
    try:
        first = b"".join(written) + (next_part(parts) or b"")
    except BaseException:
        close_result(result)
        raise
    status, headers = started
    return WsgiStream(int(status.split(None, 1)[0]), headers, first, parts, result)


def close_result(result: Iterable[bytes]) -> None:
    """PEP 3333: the server calls the response's `close()`, if it has one, however the response ended."""
    close = getattr(result, "close", None)
    if close is not None:
        close()


def next_part(parts: Iterator[bytes]) -> bytes | None:
    """The response's next non-empty part, or None at its end."""
    for part in parts:
        if part:
            return part
    return None
