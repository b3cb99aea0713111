"""A send rate shared by every worker: each send books its turn on one timeline kept in Redis.

The timeline is the earliest moment the next send may go (a GCRA, the generic cell rate algorithm). A
caller asking for `count` sends gets the turn starting at that moment (or now, when it is past) and moves
the moment on by `count / per_second`; it then waits for its turn. So N sends take N / rate seconds
whatever the batch size, across any number of workers. The one burst is a single request: a batch
goes whole at its turn, so the dispatcher keeps batches within a second's budget (`batch_limit`).
"""

from __future__ import annotations

import math
import time

import redis

#: Books `ARGV[1]` seconds on the timeline at `KEYS[1]`; answers the wait until the turn, as a string
#: (Redis would truncate a Lua number to an integer). Redis's own clock: workers' clocks may disagree.
_BOOK = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local free = tonumber(redis.call('GET', KEYS[1]) or '0')
local start = math.max(free, now)
local until_ = start + tonumber(ARGV[1])
redis.call('SET', KEYS[1], string.format('%.6f', until_), 'EX', math.ceil(until_ - now) + 5)
return string.format('%.6f', start - now)
"""


def batch_limit(batch_size: int, per_second: float) -> int:
    """The most recipients one request may carry so that no second sends more than the rate allows."""
    return max(1, min(batch_size, math.floor(per_second)))


def acquire(client: redis.Redis, name: str, count: int, per_second: float) -> float:
    """Book `count` sends on the shared timeline and wait for their turn; returns the seconds waited."""
    wait = float(client.eval(_BOOK, 1, f"reach:rate:{name}", count / per_second))
    if wait > 0:
        time.sleep(wait)
    return wait
