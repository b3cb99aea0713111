"""Request rate limits (Flask-Limiter): per client address, counted in Redis so every receiver process and
every receiver box shares one count (celery-reliability.md §6). Without REDIS_URL (embedded mode) the count
is kept in this process's memory.

A refused request gets 429 with a JSON error and `Retry-After` in whole seconds (at least 1).

Callbacks count by who sent them (web/callers.py): AT's (the right `?token=`) in no limit at all, a stranger's
in one bucket per address across every callback endpoint (RATE_LIMIT_UNAUTHENTICATED), an operator's send
through /communicate in RATE_LIMIT_OPERATOR, and, while WEBHOOK_TOKEN is unset, everyone's in
RATE_LIMIT_CALLBACKS.
"""

from __future__ import annotations

import functools
import logging
import math
import time
from collections.abc import Callable

from flask import Blueprint, Flask
from flask.typing import ResponseReturnValue
from flask_limiter import Limiter, RateLimitExceeded, RequestLimit
from flask_limiter.util import get_remote_address
from limits import parse_many
from limits.storage import RedisStorage

from shared.inbox import Window
from shared.settings import Settings
from web.callers import Caller, callback_caller
from web.errors import error_response

log = logging.getLogger(__name__)

#: Reach's keys all start with `reach:`, so tests and operators can find (and clear) them.
KEY_PREFIX = "reach:limits"
#: The strangers' bucket: shared by every callback endpoint, so five endpoints are not five budgets.
STRANGERS_SCOPE = "callbacks-unauthenticated"


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
    _limit_callbacks(limiter, settings, callbacks)
    limiter.limit(settings.rate_limit_operator)(operator)

    @app.errorhandler(RateLimitExceeded)
    def _too_many(exc: RateLimitExceeded) -> ResponseReturnValue:
        body, status = error_response(429, f"too many requests (limit {exc.description}); retry later")
        return body, status, {"Retry-After": str(retry_after(limiter.current_limit))}

    return limiter


def open_callback_limit(settings: Settings) -> str | None:
    """The limit on callbacks that pass the token check: RATE_LIMIT_CALLBACKS while WEBHOOK_TOKEN is unset (anyone
    passes it), none while it is set (the caller is AT or us; a 429 may lose AT's report, at-api.md §12)."""
    return None if settings.webhook_tokens else settings.rate_limit_callbacks


def _limit_callbacks(limiter: Limiter, settings: Settings, callbacks: Blueprint) -> None:
    """Each callback request counts in the one limit of its caller (web/callers.py), or in none (AT)."""

    def unless(caller: Caller) -> Callable[[], bool]:
        return lambda: callback_caller() is not caller

    for_strangers = limiter.shared_limit(
        settings.rate_limit_unauthenticated, STRANGERS_SCOPE, exempt_when=unless(Caller.STRANGER)
    )
    for_strangers(callbacks)
    # A scope of its own: with RATE_LIMIT_OPERATOR equal to the open limit the two would share keys.
    limiter.limit(settings.rate_limit_operator, scope="operator", exempt_when=unless(Caller.OPERATOR))(callbacks)
    open_limit = open_callback_limit(settings)
    if open_limit:  # no scope: the keys the fast path counts in (ClientWindows)
        limiter.limit(open_limit, exempt_when=unless(Caller.ANYONE))(callbacks)
    elif "rate_limit_callbacks" in settings.model_fields_set:
        log.warning(
            "RATE_LIMIT_CALLBACKS applies only while WEBHOOK_TOKEN is unset: callbacks carrying the token are never"
            " rate-limited, and those without it count in RATE_LIMIT_UNAUTHENTICATED; remove RATE_LIMIT_CALLBACKS"
        )
    # Flask-Limiter logs each refused request; a stranger's are reported by web.callers' throttled line.
    logging.getLogger("flask-limiter").addFilter(_quiet_strangers)


def _quiet_strangers(record: logging.LogRecord) -> bool:
    """Drop Flask-Limiter's line per refused stranger (`ratelimit %s (%s) exceeded at endpoint: %s`)."""
    return not (isinstance(record.args, tuple) and STRANGERS_SCOPE in record.args)


def retry_after(limit: RequestLimit | None) -> int:
    """`Retry-After` for a refused request: whole seconds until the limit's window lets one through, at least 1."""
    return max(1, math.ceil(limit.reset_at - time.time())) if limit else 1


class ClientWindows:
    """The Redis windows Flask-Limiter counts one client's requests to one endpoint in, for the receiver's fast
    path (web/fastpath.py), which counts in the same windows without Flask. Keys as Flask-Limiter builds them
    (`LIMITER/<address>/<endpoint>/<amount>/<multiples>/<unit>`, limits checked in sorted order) and as the
    `limits` Redis storage stores a sliding window (`<prefix>:{key}` and `<prefix>:{key}/-1`);
    tests/test_fastpath.py fails if either library changes them."""

    def __init__(self, limit_value: str | None) -> None:
        """No `limit_value`: no windows, every request is let through."""
        self.items = sorted(parse_many(limit_value)) if limit_value else []
        # AT calls from a handful of addresses: their keys are built once (bounded: any client may call).
        self.for_request = functools.lru_cache(maxsize=1024)(self._for_request)

    def _for_request(self, address: str | None, endpoint: str) -> tuple[Window, ...]:
        windows = []
        for item in self.items:
            key = f"{KEY_PREFIX}:{{{item.key_for(address or '127.0.0.1', endpoint)}}}"
            windows.append(Window(key + "/-1", key, item.amount, item.get_expiry()))
        return tuple(windows)
