"""The Flask app (WSGI) called from the async front (web/asgi.py): an environ built from the ASGI scope, and the
app run to its last byte in a worker thread, with the body already read (web/asgi_bodies.py).

The environ is what a WSGI server gives (PEP 3333): the path unquoted and as Latin-1 text, the query string
as sent, `HTTP_*` headers (repeated ones joined with commas, as gunicorn does), CONTENT_TYPE and
CONTENT_LENGTH without the prefix. The response is collected whole: Reach's answers are small JSON, pages
and CSV exports of a bounded size.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable
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


def call_wsgi(app: WsgiApp, environ: dict[str, Any], body: IO[bytes]) -> WsgiAnswer:
    """Run `app` on `environ` with `body` as its input, to the end of its response (in a worker thread)."""
    environ["wsgi.input"] = body
    started: list[Any] = []

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Callable[[bytes], None]:
        if exc_info is not None and started:
            raise exc_info[1].with_traceback(exc_info[2])
        started[:] = [status, headers]
        return parts.append

    parts: list[bytes] = []
    result = app(environ, start_response)
    try:
        parts.extend(result)
    finally:
        close = getattr(result, "close", None)
        if close is not None:
            close()
    status, headers = started
    encoded = [(name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in headers]
    return WsgiAnswer(int(status.split(None, 1)[0]), encoded, b"".join(parts))
