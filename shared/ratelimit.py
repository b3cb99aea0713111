"""A send rate shared by every worker: a one-second window counted in Redis."""

from __future__ import annotations

import math
import time

import redis


def acquire(client: redis.Redis, name: str, count: int, per_second: float) -> float:
    """Wait until `count` more sends fit this second's budget; returns the seconds waited.

    A batch larger than the whole budget still goes when it opens a fresh second, so a batch size above
    the rate slows sending to one batch per second instead of stopping it.
    """
    budget = max(1, math.floor(per_second))
    waited = 0.0
    while True:
        second = int(time.time())
        key = f"reach:rate:{name}:{second}"
        with client.pipeline(transaction=True) as pipe:
            pipe.incrby(key, count)
            pipe.expire(key, 5)
            used = int(pipe.execute()[0])
        if used <= budget or used == count:
            return waited
        client.decrby(key, count)  # give back what did not fit; try in the next second
        pause = max(0.01, second + 1 - time.time())
        time.sleep(pause)
        waited += pause
