"""Request rate limits (Flask-Limiter): per client address, counted in Redis so every gunicorn worker and
every receiver box shares one count (celery-reliability.md §6). Without REDIS_URL (embedded mode) the count
is kept in this process's memory.

A refused request gets 429 with a JSON error and `Retry-After` in whole seconds (at least 1).
"""

from __future__ import annotations

import functools
import math
import time

from flask import Blueprint, Flask
from flask.typing import ResponseReturnValue
from flask_limiter import Limiter, RateLimitExceeded, RequestLimit
from flask_limiter.util import get_remote_address
from limits import parse_many
from limits.storage import RedisStorage

from shared.inbox import Window
from shared.settings import Settings
from web.errors import error_response

#: Reach's keys all start with `reach:`, so tests and operators can find (and clear) them.
KEY_PREFIX = "reach:limits"


def storage_uri(redis_url: str) -> str:
    """The limits library's spelling of our Redis URL; memory when there is no Redis."""
    if not redis_url:
        return "memory://"
    if redis_url.startswith("unix://"):
        return "redis+unix://" + redis_url.removeprefix("unix://")
    return redis_url


def init_app(app: Flask, settings: Settings, callbacks: Blueprint, operator: Blueprint) -> Limiter:
    limiter = Limiter(
        get_remote_address,
        app=app,
        storage_uri=storage_uri(settings.redis_url),
        storage_options={"key_prefix": KEY_PREFIX, "socket_timeout": 2, "socket_connect_timeout": 2},
        # Sliding window: no double burst at a window's edge, and one Redis call per request.
        strategy="sliding-window-counter",
        # A Redis outage must not turn into 500s here: the callback then gets the inbox's own 503.
        swallow_errors=True,
        headers_enabled=False,
    )
    if isinstance(limiter.storage, RedisStorage):  # memory (embedded mode) has nothing to close
        app.extensions["reach"].closers.append(limiter.storage.storage.close)
    limiter.limit(settings.rate_limit_callbacks)(callbacks)
    limiter.limit(settings.rate_limit_operator)(operator)

    @app.errorhandler(RateLimitExceeded)
    def _too_many(exc: RateLimitExceeded) -> ResponseReturnValue:
        body, status = error_response(429, f"too many requests (limit {exc.description}); retry later")
        return body, status, {"Retry-After": str(retry_after(limiter.current_limit))}

    return limiter


def retry_after(limit: RequestLimit | None) -> int:
    """`Retry-After` for a refused request: whole seconds until the limit's window lets one through, at least 1."""
    return max(1, math.ceil(limit.reset_at - time.time())) if limit else 1


class ClientWindows:
    """The Redis windows Flask-Limiter counts one client's requests to one endpoint in, for the receiver's fast
    path (web/fastpath.py), which counts in the same windows without Flask. Keys as Flask-Limiter builds them
    (`LIMITER/<address>/<endpoint>/<amount>/<multiples>/<unit>`, limits checked in sorted order) and as the
    `limits` Redis storage stores a sliding window (`<prefix>:{key}` and `<prefix>:{key}/-1`);
    tests/test_fastpath.py fails if either library changes them."""

    def __init__(self, limit_value: str) -> None:
        self.items = sorted(parse_many(limit_value))
        # AT calls from a handful of addresses: their keys are built once (bounded: any client may call).
        self.for_request = functools.lru_cache(maxsize=1024)(self._for_request)

    def _for_request(self, address: str | None, endpoint: str) -> tuple[Window, ...]:
        windows = []
        for item in self.items:
            key = f"{KEY_PREFIX}:{{{item.key_for(address or '127.0.0.1', endpoint)}}}"
            windows.append(Window(key + "/-1", key, item.amount, item.get_expiry()))
        return tuple(windows)
