"""The Flask app (WSGI) called from the async front (web/asgi.py): an environ built from the ASGI scope, and the
app run to its last byte in a worker thread, with the body already read (web/asgi_bodies.py).

The environ is what a WSGI server gives (PEP 3333): the path unquoted and as Latin-1 text, the query string
as sent, `HTTP_*` headers (repeated ones joined with commas, as gunicorn does), CONTENT_TYPE and
CONTENT_LENGTH without the prefix. The response goes out part by part as the app yields it (`start_wsgi`,
then `next_part` until None): a cycle's CSV export is a generator of pages, so a million contacts never sit
in memory (shared/cycle_export.py).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import IO, Any
from urllib.parse import unquote_to_bytes

_UNPREFIXED = frozenset({"CONTENT_TYPE", "CONTENT_LENGTH"})
WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


def environ_for(scope: dict[str, Any]) -> dict[str, Any]:
    """The WSGI environ of an ASGI HTTP request, its `wsgi.input` still to be set."""
    server = scope.get("server") or ("localhost", 80)
    client = scope.get("client") or ("", 0)
    raw_path = scope.get("raw_path")
    path = unquote_to_bytes(raw_path.split(b"?", 1)[0]) if raw_path else scope["path"].encode("utf-8")
    environ: dict[str, Any] = {
        "REQUEST_METHOD": scope["method"],
        "SCRIPT_NAME": "",
        "PATH_INFO": path.decode("latin-1"),
        "QUERY_STRING": scope.get("query_string", b"").decode("latin-1"),
        "SERVER_NAME": server[0],
        "SERVER_PORT": str(server[1]),
        "SERVER_PROTOCOL": f"HTTP/{scope.get('http_version', '1.1')}",
        "REMOTE_ADDR": client[0],
        "REMOTE_PORT": str(client[1]),
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": scope.get("scheme", "http"),
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": True,
        "wsgi.multiprocess": True,
        "wsgi.run_once": False,
    }
    for raw_name, raw_value in scope.get("headers", ()):
        name = raw_name.decode("latin-1").upper().replace("-", "_")
        value = raw_value.decode("latin-1")
        key = name if name in _UNPREFIXED else "HTTP_" + name
        environ[key] = f"{environ[key]},{value}" if key in environ else value
    if "chunked" in environ.get("HTTP_TRANSFER_ENCODING", "").lower():
        environ["wsgi.input_terminated"] = True  # no length: read to the end
    return environ


@dataclass
class WsgiAnswer:
    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes


@dataclass
class WsgiStream:
    """A WSGI response under way: its status and headers, its first part, and the rest still to be made."""

    status: int
    headers: list[tuple[bytes, bytes]]
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
    encoded = [(name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in headers]
    return WsgiStream(int(status.split(None, 1)[0]), encoded, first, parts, result)


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
