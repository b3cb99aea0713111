"""The fast path's Redis push made on the async front's event loop (web/front.py), over a redis.asyncio client.

The same script, keys and arguments as `Inbox.push_within` (shared/inbox.py: count each callback in its
rate-limit windows, LPUSH those with room, set the drainer's wake-up mark), so the same answer: Redis has the
callback (on AOF, fsynced) before its 200. Made on the loop rather than by a blocking client on a flush
thread: that hand-off (a thread woken per batch, the GIL passed back and forth, a future chained across)
cost the receiver ~40 µs of CPU per DLR on the flush thread alone (issue 15, measured per thread), more than
the round trip on the loop costs.

The client is made on the first push, on the loop that runs it (a redis.asyncio connection belongs to one
loop), with the timeouts of the receiver's blocking client (web/services.py): a dead Redis is a 503 after
RECEIVER_REDIS_TIMEOUT seconds, as before. Waking a drainer (a Celery message, a blocking call, at most every
NUDGE_PERIOD_MS) runs on a thread of its own, off the loop (and not behind Flask's requests), and is awaited,
as the blocking push awaited it.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import redis.asyncio
from redis.exceptions import ConnectionError, NoScriptError, TimeoutError

from shared.inbox import PUSH_WITHIN_LIMITS, Inbox, Window, push_within_arguments, pushed_flags
from web.services import RECEIVER_REDIS_TIMEOUT


class AsyncPush:
    def __init__(self, inbox: Inbox, redis_url: str) -> None:
        """`inbox`: the app's (its drainer wake-up)."""
        self.inbox = inbox
        self.redis_url = redis_url
        self.waker = ThreadPoolExecutor(1, thread_name_prefix="wake-drainer")
        self._client: redis.asyncio.Redis | None = None
        self._connection: Any = None

    async def __call__(self, callbacks: Sequence[tuple[str, Sequence[Window]]]) -> list[bool]:
        """`Inbox.push_within`, awaited: True per callback queued, False per one a full window refused."""
        keys, args = push_within_arguments(callbacks)
        try:
            woke, accepted = await self._evalsha(keys, args)
        except NoScriptError:  # Redis restarted, or its scripts were flushed
            assert self._client is not None
            await self._client.script_load(PUSH_WITHIN_LIMITS)
            woke, accepted = await self._evalsha(keys, args)
        if woke:
            await asyncio.get_running_loop().run_in_executor(self.waker, self.inbox.wake)
        return pushed_flags(accepted)

    async def _evalsha(self, keys: list[str], args: list[str | int]) -> Any:
        """One EVALSHA on this loop's own connection, without the pool and the per-command layers of
        `Redis.execute_command` (their cost was a tenth of the front's CPU per DLR: one call per batch, but a
        batch is a few callbacks)."""
        if self._connection is None:
            self._connect()
        connection = self._connection
        packed = connection.pack_command("EVALSHA", SCRIPT_SHA, len(keys), *keys, *args)
        reused = connection.is_connected
        try:
            return await _round_trip(connection, packed)
        except ConnectionError:
            if not reused:
                raise
            # Redis closed the connection while it was idle (a restart, CLIENT KILL, its idle timeout), which
            # the loop may not have noticed yet: once more, on a new one. redis-py's blocking pool checked the
            # socket before handing it out; its asyncio pool skips that check by default (maintenance
            # notifications on). A push Redis ran before the connection broke is then queued twice, under one
            # inbox id: the drain applies an id once.
            return await _round_trip(connection, packed)

    def _connect(self) -> None:
        self._client = redis.asyncio.Redis.from_url(
            self.redis_url,
            socket_timeout=RECEIVER_REDIS_TIMEOUT,
            socket_connect_timeout=RECEIVER_REDIS_TIMEOUT,
            health_check_interval=25,
        )
        self._connection = self._client.connection_pool.make_connection()

    async def aclose(self) -> None:
        """Close the connections (on the loop that made them)."""
        self.waker.shutdown(wait=True)
        if self._connection is not None:
            await self._connection.disconnect()
        if self._client is not None:
            await self._client.aclose()
        self._client = self._connection = None


async def _round_trip(connection: Any, packed: Any) -> Any:
    try:
        await connection.send_packed_command(packed)  # connects first if not connected
        return await connection.read_response()
    except (ConnectionError, TimeoutError):
        await connection.disconnect()  # the next call connects again
        raise


#: What EVALSHA names the script by (as redis-py's `Script` computes it).
SCRIPT_SHA = hashlib.sha1(PUSH_WITHIN_LIMITS.encode(), usedforsecurity=False).hexdigest()
