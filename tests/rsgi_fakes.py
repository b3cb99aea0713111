"""Stand-ins for granian's RSGI scope and HTTP protocol object, to drive the receiver's front (web/front.py) in
process: the request as granian describes it, the body as granian's stream hands it over (pieces, then an empty
one at the end; at a break, an empty one and then another), the answer as the front gives it."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


class Headers:
    def __init__(self, pairs: list[tuple[str, str]]) -> None:
        self.pairs = pairs

    def items(self) -> list[tuple[str, str]]:
        return list(self.pairs)


@dataclass
class Scope:
    method: str
    path: str
    query_string: str = ""
    headers: Headers = field(default_factory=lambda: Headers([]))
    client: str = "127.0.0.1:5000"
    server: str = "localhost:80"
    scheme: str = "http"
    http_version: str = "1.1"
    proto: str = "http"


class Transport:
    def __init__(self, sent: Callable[[bytes], None]) -> None:
        self.sent = sent

    async def send_bytes(self, data: bytes) -> None:
        self.sent(data)


class Proto:
    """A request's body in `pieces`, then `then`: "end" (the body's end), "stall" (a client gone quiet) or
    "break" (its framing broke, or the client went away). The answer is kept in `status`, `headers`, `parts`."""

    def __init__(self, pieces: list[bytes], then: str = "end", on_part: Callable[[bytes], None] | None = None) -> None:
        self.pieces = list(pieces)
        self.then = then
        self.ended = False
        self.asked = 0  # bytes handed over
        self.on_part = on_part
        self.status: int | None = None
        self.headers: list[tuple[str, str]] = []
        self.parts: list[bytes] = []

    def __aiter__(self) -> Proto:
        return self

    def __anext__(self) -> Any:
        if self.ended:  # granian's: refused at once after the end, not after a break
            raise StopAsyncIteration
        return asyncio.ensure_future(self._next())  # under way, as granian's, whether awaited or not

    async def _next(self) -> bytes:
        if self.pieces:
            piece = self.pieces.pop(0)
            self.asked += len(piece)
            return piece
        if self.then == "stall":
            await asyncio.Event().wait()
        if self.then == "end":
            self.ended = True
        else:
            self.then = "end"  # after a break, the stream's own end
        return b""

    def response_bytes(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
        self.status, self.headers = status, headers
        self._sent(body)

    def response_stream(self, status: int, headers: list[tuple[str, str]]) -> Transport:
        self.status, self.headers = status, headers
        return Transport(self._sent)

    def _sent(self, part: bytes) -> None:
        self.parts.append(part)
        if self.on_part is not None:
            self.on_part(part)

    @property
    def body(self) -> bytes:
        return b"".join(self.parts)
