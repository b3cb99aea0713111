"""Group commit on an event loop: callbacks that arrive while one round trip to Redis is in flight share the next.

The asyncio twin of web/group_commit.py, for the receiver's async front (web/front.py). Every request of a
worker process runs on one event loop, so the batching needs no locks: a request appends its item and awaits
its future; one flusher task at a time sends everything queued so far in one call (`flush`, awaited on the
loop: web/async_push.py), then sends what queued up during that call, and so on. Nobody is answered before
its own item was written, so nothing acknowledged can be lost; under load a round trip's cost is shared by a
batch.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

from web.group_commit import MAX_BATCH

Item = TypeVar("Item")
Result = TypeVar("Result")


class AsyncGroupCommit(Generic[Item, Result]):
    def __init__(self, flush: Callable[[Sequence[Item]], Awaitable[Sequence[Result]]]) -> None:
        """`flush(items)` writes a batch and returns one result per item, in order; if it raises, every item
        of that batch gets the exception. One call at a time: batches go out one after the other, in order."""
        self._flush = flush
        self._queue: list[tuple[Item, asyncio.Future[Result]]] = []
        self._flushing = False
        self._flusher: asyncio.Task[None] | None = None  # kept: the loop holds only weak references to tasks

    async def submit(self, item: Item) -> Result:
        """Write `item` (in a batch with whatever else is waiting) and return its result, or raise."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Result] = loop.create_future()
        self._queue.append((item, future))
        if not self._flushing:
            self._flushing = True
            self._flusher = loop.create_task(self._flush_all())
        return await future

    async def _flush_all(self) -> None:
        try:
            # The requests already readable on this turn of the loop join the first batch.
            await asyncio.sleep(0)
            while self._queue:
                batch, self._queue = self._queue[:MAX_BATCH], self._queue[MAX_BATCH:]
                try:
                    results = await self._flush([item for item, _ in batch])
                except BaseException as exc:  # every waiter must hear, or it would wait forever
                    for _, future in batch:
                        if not future.done():
                            future.set_exception(exc)
                    if not isinstance(exc, Exception):
                        raise
                    continue
                for (_, future), result in zip(batch, results, strict=True):
                    if not future.done():  # its request may have been cancelled (the client went away)
                        future.set_result(result)
        finally:
            self._flushing = False
