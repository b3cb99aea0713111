"""Group commit: requests that arrive while one round trip to Redis is in flight share the next one.

A receiver process serves many requests at once (gthread's threads, gevent's greenlets). Each callback
must be in Redis before its 200, but it need not have a round trip of its own: the first request to arrive
becomes the leader and sends its item; those arriving meanwhile queue up, and when the leader's round trip
is back it hands leadership to the oldest waiting request, which sends everything queued so far in one go.
Nobody is answered before its own item was written, so nothing acknowledged can be lost, and under load a
round trip's cost is shared by a batch (bench/RESULTS.md, section 1). With one request at a time (gunicorn's
sync worker) every batch is a batch of one.

Works with threads and, under gevent's monkey-patching, with greenlets (`threading` is then gevent's).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Generic, TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")

#: A batch's size is capped: one Redis script call carries it, and a huge one would hold Redis up.
MAX_BATCH = 256


class _Waiter(Generic[Item, Result]):
    __slots__ = ("done", "error", "item", "lead", "result")

    def __init__(self, item: Item) -> None:
        self.item = item
        self.done = threading.Event()
        self.lead = False
        self.result: Result | None = None
        self.error: BaseException | None = None


class GroupCommit(Generic[Item, Result]):
    def __init__(self, flush: Callable[[Sequence[Item]], Sequence[Result]]) -> None:
        """`flush(items)` writes a batch and returns one result per item, in order; if it raises, every item
        of that batch gets the exception."""
        self._flush = flush
        self._lock = threading.Lock()
        self._queue: list[_Waiter[Item, Result]] = []
        self._leading = False
        self._running = 0  # requests inside `running()`
        self._concurrent = False  # ever more than one at once: this process serves requests side by side

    @contextmanager
    def running(self) -> Iterator[None]:
        """Wrap a request that may `submit()`: once this process has been seen serving requests side by side, a
        leader gives those on their way a moment to join its batch; a sync worker, one request at a time,
        never waits."""
        with self._lock:
            self._running += 1
            self._concurrent = self._concurrent or self._running > 1
        try:
            yield
        finally:
            with self._lock:
                self._running -= 1

    @property
    def waiting(self) -> int:
        """Requests queued for the next round trip."""
        with self._lock:
            return len(self._queue)

    def submit(self, item: Item) -> Result:
        """Write `item` (in a batch with whatever else is waiting) and return its result, or raise."""
        waiter: _Waiter[Item, Result] = _Waiter(item)
        with self._lock:
            self._queue.append(waiter)
            leads = not self._leading
            self._leading = True
        if not leads:
            waiter.done.wait()
        if waiter.lead or leads:
            self._lead()
        if waiter.error is not None:
            raise waiter.error
        return waiter.result  # type: ignore[return-value]

    def _lead(self) -> None:
        if self._concurrent:
            # Yield once (to other threads, or greenlets) so the requests already runnable reach the queue.
            # Measured under gevent: batches of ~2 became ~7 (bench/RESULTS.md, section 1).
            time.sleep(0)
        with self._lock:
            batch, self._queue = self._queue[:MAX_BATCH], self._queue[MAX_BATCH:]
        try:
            results = self._flush([w.item for w in batch])
            for waiter, result in zip(batch, results, strict=True):
                waiter.result = result
        except BaseException as exc:  # every waiter must hear, or it would wait forever
            for waiter in batch:
                waiter.error = exc
        finally:
            self._hand_over()
            for waiter in batch:
                waiter.done.set()

    def _hand_over(self) -> None:
        """Make the oldest waiting request the next leader, or stand down if nobody waits."""
        with self._lock:
            if not self._queue:
                self._leading = False
                return
            successor = self._queue[0]
        successor.lead = True
        successor.done.set()
