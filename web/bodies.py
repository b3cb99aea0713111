"""Reading a request body: JSON only through `read_json`, and a body the server cannot read is a 400.

Python's `json` accepts more than JSON and trusts its input's shape. `NaN`, `Infinity` and `1e999` become
floats no JSON encoder may write back (and that compare false with everything); `1` followed by 400 zeros
becomes an integer no column can hold; a body nested 1,000 deep raises RecursionError (a 500 with a
traceback on every endpoint, issue 12). `read_json` refuses each with a 400 that names it, for every
endpoint that takes JSON: the callbacks (web/forms.py), `/communicate` and the operator API.

The HTTP server parses the framing of a chunked body (granian in production, Werkzeug's
server in tests) while the app reads it, so a bad chunk size or a body cut short surfaces as an exception
from `wsgi.input`. `GuardedBodies` turns it into one 400 for every route, without a traceback.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from flask import Request
from werkzeug.exceptions import BadRequest, HTTPException

from web.errors import ApiError

log = logging.getLogger(__name__)

#: Deeper than any body Reach takes (the deepest, `{"contacts": [{...}]}`, is 3) and far from the
#: interpreter's recursion limit, so nothing that walks a body recursively can reach it.
MAX_JSON_DEPTH = 32
#: The largest magnitude of a JSON integer: a Postgres bigint. Larger ones fit no column, and `int()` of a
#: long digit string costs time quadratic in its length.
MAX_JSON_INT = 2**63 - 1
_INT_DIGITS = len(str(MAX_JSON_INT))

#: Every byte but the ones that open and close containers and strings: deleted before counting depth.
_NOT_STRUCTURE = bytes(b for b in range(256) if b not in b'[]{}"')


def read_json(request: Request, hint: str = "") -> Any:
    """The body as a JSON value; a 400 `ApiError` naming what is wrong (`hint` follows "not valid JSON")."""
    body = request.get_data(cache=True)
    if _nested_deeper_than(body, MAX_JSON_DEPTH):
        raise ApiError(400, f"JSON nested deeper than {MAX_JSON_DEPTH} levels")
    try:
        text = body.decode("utf-8-sig")  # RFC 8259 §8.1: JSON between systems is UTF-8
        return json.loads(text, parse_constant=_no_constant, parse_float=_finite_float, parse_int=_bounded_int)
    except UnicodeDecodeError:
        raise ApiError(400, f"body is not valid JSON: not UTF-8{hint}") from None
    except json.JSONDecodeError as exc:
        raise ApiError(
            400, f"body is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}{hint}"
        ) from None


def read_json_object(request: Request) -> dict[str, Any]:
    """The body as a JSON object (`read_json`), else a 400."""
    doc = read_json(request)
    if not isinstance(doc, dict):
        raise ApiError(400, "JSON body must be an object")
    return doc


def _nested_deeper_than(body: bytes, limit: int) -> bool:
    """Whether the containers in `body` nest deeper than `limit`, found before parsing and without
    recursion, in a few passes of C code over the bytes (a 25 MB contacts upload takes well under a second).

    Escaped backslashes and quotes go first, so every `"` left opens or closes a string; then everything
    but brackets and quotes, then strings (with the brackets inside them). Each pass of `replace("[]")`
    then removes exactly the innermost containers, so what is left after `limit` passes is deeper.
    ASCII bytes never occur inside a UTF-8 sequence, so this works on the undecoded bytes.
    """
    if body.count(b"[") + body.count(b"{") <= limit:
        return False
    marks = body.replace(b"\\\\", b"").replace(b'\\"', b"").translate(None, _NOT_STRUCTURE)
    # Two adjacent quotes enclose nothing (an empty string, or the gap between two strings): dropping
    # them leaves every other byte inside or outside a string as it was.
    marks = marks.replace(b'""', b"")
    brackets = b"".join(marks.split(b'"')[::2]).replace(b"{", b"[").replace(b"}", b"]")
    for _ in range(limit):
        if not brackets:
            return False
        brackets = brackets.replace(b"[]", b"")
    return bool(brackets)


def _no_constant(name: str) -> Any:
    raise ApiError(400, f"{name} is not a JSON number")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ApiError(400, f"number out of range: {_shown(text)}")
    return value


def _bounded_int(text: str) -> int:
    # The length first: `int()` of thousands of digits is slow, and refused past 4,300 digits anyway.
    if len(text.lstrip("-")) > _INT_DIGITS or abs(value := int(text)) > MAX_JSON_INT:
        raise ApiError(400, f"number out of range: {_shown(text)}")
    return value


def _shown(text: str) -> str:
    return text if len(text) <= 24 else text[:22] + "…"


# -- bodies the server cannot read ----------------------------------------------------------------------------


class BadBody(BadRequest):
    """A body the server could not read to its end: a malformed chunked framing, or one that ended before its
    Content-Length (the client stopped sending). The server closes the connection after the answer."""


T = TypeVar("T")


#: What a body whose chunked framing is broken is answered (a 400), here and by the async front (web/front.py).
MALFORMED_CHUNKED = "malformed chunked body"


class GuardedInput:
    """`wsgi.input` whose read errors, and an end before the declared length, are `BadBody`.

    gunicorn hands a body cut short to the app as if it were whole (its reader stops at the end of the
    stream), so without the count a callback cut mid-field would be queued as sent."""

    def __init__(self, stream: Any, chunked: bool, declared: int | None) -> None:
        self._stream = stream
        self._problem = MALFORMED_CHUNKED if chunked else "request body could not be read to its end"
        self._declared = declared
        self._seen = 0

    def read(self, *args: Any) -> bytes:
        return self._counted(self._guard(self._stream.read, *args), args)

    def readline(self, *args: Any) -> bytes:
        return self._counted(self._guard(self._stream.readline, *args), args)

    def readlines(self, *args: Any) -> list[bytes]:
        return [self._counted(line, ()) for line in self._guard(self._stream.readlines, *args)]

    def __iter__(self) -> GuardedInput:
        return self

    def __next__(self) -> bytes:
        line = self.readline()
        if not line:
            raise StopIteration
        return line

    def _guard(self, read: Callable[..., T], *args: Any) -> T:
        try:
            return read(*args)
        except (HTTPException, TimeoutError):
            raise  # answered by whoever raised it (a body too large, too slow)
        except Exception as exc:  # gunicorn's parse errors are neither OSError nor ValueError
            log.info("%s: %s", self._problem, str(exc)[:200])
            raise BadBody(self._problem) from None

    def _counted(self, data: bytes, args: tuple[Any, ...]) -> bytes:
        self._seen += len(data)
        at_end = not data and args[:1] != (0,)  # `read(0)` is empty without being the end
        if at_end and self._declared is not None and self._seen < self._declared:
            log.info("request body ended after %s of its %s bytes", self._seen, self._declared)
            raise BadBody("request body ended before its declared length")
        return data


class GuardedBodies:
    """WSGI middleware: the app reads `wsgi.input` through `GuardedInput`."""

    def __init__(self, wsgi_app: Callable[..., Iterable[bytes]]) -> None:
        self.wsgi_app = wsgi_app

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        chunked = "chunked" in environ.get("HTTP_TRANSFER_ENCODING", "").lower()
        length = environ.get("CONTENT_LENGTH", "")
        declared = int(length) if length.isascii() and length.isdigit() and len(length) < 19 and not chunked else None
        environ["wsgi.input"] = GuardedInput(environ["wsgi.input"], chunked, declared)
        return self.wsgi_app(environ, start_response)
