"""A request body read by the async front (web/front.py) on its event loop, under the body deadline, before any
thread runs the Flask app: a client that trickles its body holds a connection and a coroutine, never a thread.

granian's RSGI protocol object hands the body over as it arrives (`__anext__`: one piece per read from the
socket), then an empty piece at its end. Where the body breaks (a malformed chunked framing, the client gone)
it hands an empty piece too, but the stream goes on to a second one: only after a true end is the next
`__anext__` refused at once (StopAsyncIteration). A body of a declared length is read to that length, so
one cut short is plain from its size. A chunked body's trailer fields come the same way as a break (an empty
piece, then another), and granian 2.8 tells the two apart nowhere: such a body is taken as broken (a 400),
never a body cut short as whole. Clients do not send trailers with a request (AT, browsers, curl, requests).

The deadline is web/body_deadline.py's: BODY_TIMEOUT_SECONDS from the first read, plus a second for every
MIN_RATE bytes delivered, so a large upload at a fair pace is read whole and a trickle is cut.

What the front read is handed to WSGI as `wsgi.input` (`ReadBody.wsgi_input`): the bytes, then what a server's
input raises there (BodyTooSlow, a 408; a broken chunked framing, which web/bodies.py's GuardedInput answers
400), so Flask answers each case from one place. A body is kept in memory up to SPOOL_IN_MEMORY and in a
temporary file beyond (an operator upload may be 32 MiB).
"""

from __future__ import annotations

import asyncio
import io
import tempfile
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import IO, Any, Protocol

from web.body_deadline import MIN_RATE, BodyTooSlow, too_slow_message

SPOOL_IN_MEMORY = 256 * 1024


class BodyPieces(Protocol):
    """granian's RSGI HTTP protocol object, as far as the body goes (`async for piece in proto`)."""

    def __aiter__(self) -> Any: ...


class BrokenBody(ConnectionError):
    """The client's framing broke, or it went away, before the body's end (GuardedInput: a 400)."""


@dataclass
class ReadBody:
    """A body as far as it was read: `complete`, `too_slow` (the deadline passed) or `broken`; `over` when it
    went past the cap (the rest was not read: Flask answers 413 from what it has)."""

    data: IO[bytes]
    size: int
    complete: bool
    too_slow: bool = False
    broken: bool = False
    over: bool = False

    def bytes(self) -> bytes:
        self.data.seek(0)
        return self.data.read()

    def wsgi_input(self, chunked: bool, seconds: float) -> IO[bytes]:
        """The body for Flask. A body of a declared length cut short just ends (GuardedInput counts it short:
        a 400 naming that); a chunked one raises where its framing broke."""
        self.data.seek(0)
        if self.too_slow:
            return _FailAtEnd(self.data, lambda: BodyTooSlow(too_slow_message(seconds)))
        if self.broken and chunked:
            return _FailAtEnd(self.data, lambda: BrokenBody("request body framing broken or cut short"))
        return self.data

    @property
    def keeps_connection(self) -> bool:
        """Whether the connection may serve another request: not when part of this body is still unread."""
        return self.complete

    def close(self) -> None:
        self.data.close()


async def read_body(
    proto: BodyPieces, length: int | None, cap: int, seconds: float, min_rate: int = MIN_RATE
) -> ReadBody:
    """Read the body of declared `length` (None: chunked) within `seconds` plus a second per `min_rate` bytes
    delivered, stopping past `cap` bytes."""
    if length == 0:  # nothing to read: no need to wait on the socket
        return ReadBody(io.BytesIO(), 0, complete=True)
    pieces = proto.__aiter__()
    started = asyncio.get_running_loop().time()
    first = await _within(pieces.__anext__, started + seconds)
    if first is not None and len(first) == length:  # most bodies: one piece, already here
        return ReadBody(io.BytesIO(first), length, complete=True, over=length > cap)
    spool: IO[bytes] = tempfile.SpooledTemporaryFile(max_size=SPOOL_IN_MEMORY)  # noqa: SIM115  ReadBody closes it
    size, piece = 0, first
    while True:
        if piece is None:
            return ReadBody(spool, size, complete=False, too_slow=True)
        if not piece:
            complete = size == length if length is not None else _ended(pieces)
            return ReadBody(spool, size, complete=complete, broken=not complete, over=complete and size > cap)
        spool.write(piece)
        size += len(piece)
        if size == length:
            return ReadBody(spool, size, complete=True, over=size > cap)
        if size > cap:
            return ReadBody(spool, size, complete=False, over=True)
        piece = await _within(pieces.__anext__, started + seconds + size / min_rate)


def _ended(pieces: Any) -> bool:
    """After an empty piece of a chunked body: True at its true end, False where it broke (granian's stream goes
    on to another empty piece then, which is let go unread: the connection closes after the answer)."""
    try:
        pieces.__anext__()
    except StopAsyncIteration:
        return True
    return False


async def _within(read: Callable[[], Awaitable[bytes]], deadline: float) -> bytes | None:
    """The next piece, or None if the deadline passes first."""
    loop = asyncio.get_running_loop()
    sweep = _sweeps.get(loop)
    if sweep is None:
        sweep = _sweeps[loop] = _Sweep()
    return await sweep.within(loop, read, deadline)


#: Checks of the reads' deadlines a second: a body is cut at most this long after its deadline.
SWEEPS_PER_SECOND = 20


class _Sweep:
    """The deadlines of the bodies being read on one loop, checked by one timer every 1/SWEEPS_PER_SECOND s
    while any read waits: `asyncio.timeout_at` per read made and cancelled a timer per request (~5 µs of the
    receiver's CPU per DLR). A read past its deadline is cancelled, as `asyncio.timeout` cancels it, and
    answered None."""

    def __init__(self) -> None:
        self.waiting: dict[asyncio.Task[Any], float] = {}  # read -> its deadline (loop time)
        self.expired: set[asyncio.Task[Any]] = set()  # cancelled here, not by anyone else
        self.timer: asyncio.TimerHandle | None = None

    async def within(
        self, loop: asyncio.AbstractEventLoop, read: Callable[[], Awaitable[bytes]], deadline: float
    ) -> bytes | None:
        task = asyncio.current_task()
        if task is None:  # not in a task (a coroutine driven by hand): nothing to cancel
            raise RuntimeError("a body is read in a task")
        cancelling = task.cancelling()
        self.waiting[task] = deadline
        if self.timer is None:
            self.timer = loop.call_later(1 / SWEEPS_PER_SECOND, self._sweep)
        try:
            return await read()
        except asyncio.CancelledError:
            # Ours, and nobody else's meanwhile (a cancellation of the request itself goes on up).
            if task in self.expired and task.uncancel() <= cancelling:
                return None
            raise
        finally:
            self.waiting.pop(task, None)
            self.expired.discard(task)

    def _sweep(self) -> None:
        loop = asyncio.get_running_loop()  # the sweep's own (its timer runs there)
        now = loop.time()
        for task in [task for task, deadline in self.waiting.items() if deadline <= now]:
            del self.waiting[task]
            self.expired.add(task)
            task.cancel()
        self.timer = loop.call_later(1 / SWEEPS_PER_SECOND, self._sweep) if self.waiting else None


#: One per event loop (keyed weakly: a test's loops come and go; a sweep keeps no reference to its loop).
_sweeps: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Sweep] = weakref.WeakKeyDictionary()


class _FailAtEnd(io.RawIOBase):
    """The bytes read, then `error()` raised where the rest of the body would have been."""

    def __init__(self, data: IO[bytes], error: Callable[[], Exception]) -> None:
        super().__init__()
        self._data = data
        self._error = error

    def readable(self) -> bool:
        return True

    def read(self, size: int | None = -1) -> bytes:
        data = self._data.read(-1 if size is None else size)
        if not data and size != 0:
            raise self._error()
        return data

    def readinto(self, buffer: Any) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def readline(self, size: int | None = -1) -> bytes:
        line = self._data.readline(-1 if size is None else size)
        if not line and size != 0:
            raise self._error()
        return line
