"""Who is calling a callback endpoint, told from its credentials alone (the body is never read for it): which
rate limit the request counts in (web/limits.py), and the report of the strangers (a WARNING line that is
itself throttled, and a metric).

AT proves itself with `?token=` (one of WEBHOOK_TOKEN). A request that carries it is AT or us (the simulator,
tests) and is never refused for rate: a 429 may be a delivery report lost for good (AT's retries are
undocumented). One without it, while WEBHOOK_TOKEN is set, is a stranger's: counted in its own bucket, so it
can never push AT's reports into 429, and reported. While WEBHOOK_TOKEN is unset nobody can prove being AT,
and every callback keeps RATE_LIMIT_CALLBACKS.
"""

from __future__ import annotations

import enum
import logging
import threading
import time
from collections.abc import Callable

from flask import Flask, Response, g, request

from web.auth import has_operator_token, has_webhook_token
from web.metrics import CALLBACK_KINDS, UNAUTHENTICATED_CALLBACKS, callback_outcome
from web.services import services

log = logging.getLogger(__name__)

#: At most one WARNING line about strangers per this many seconds per receiver process.
STRANGER_LOG_SECONDS = 10.0
#: The one callback route that also takes an operator's send (`Authorization: Bearer <API_TOKEN>`).
OPERATOR_ENDPOINTS = frozenset({"callbacks.communicate"})


class Caller(enum.Enum):
    AT = "at"  # carries one of WEBHOOK_TOKEN: AT, or us
    OPERATOR = "operator"  # an operator's send through /communicate: the operator API's limit
    ANYONE = "anyone"  # WEBHOOK_TOKEN is unset: nobody can prove being AT
    STRANGER = "stranger"  # WEBHOOK_TOKEN is set and the request does not carry it


def callback_caller() -> Caller:
    """Who sent this request to a callback endpoint (worked out once per request)."""
    caller = g.get("reach_caller")
    if caller is None:
        caller = g.reach_caller = _classify()
    return caller


def _classify() -> Caller:
    if has_webhook_token():
        return Caller.AT
    if request.endpoint in OPERATOR_ENDPOINTS and has_operator_token():
        return Caller.OPERATOR
    if not services().settings.webhook_tokens:
        return Caller.ANYONE
    return Caller.STRANGER


class ThrottledLog:
    """WARNING lines at most one per `period` seconds; those held back in between are counted, and the next
    line written says how many. Shared by a process's requests (gevent patches the lock)."""

    def __init__(self, logger: logging.Logger, period: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.logger = logger
        self.period = period
        self.clock = clock
        self._lock = threading.Lock()
        self._next_line_at = float("-inf")
        self._held_back = 0

    def warning(self, message: str, *args: object) -> int | None:
        """Write the line and return how many were held back before it, or hold it back and return None."""
        with self._lock:
            now = self.clock()
            if now < self._next_line_at:
                self._held_back += 1
                return None
            held_back, self._held_back = self._held_back, 0
            self._next_line_at = now + self.period
        self.logger.warning(message + " (%d more held back since the last line)", *args, held_back)
        return held_back


def init_app(app: Flask) -> None:
    stranger_log = ThrottledLog(log, STRANGER_LOG_SECONDS)

    @app.after_request
    def _report_strangers(response: Response) -> Response:
        kind = CALLBACK_KINDS.get(request.endpoint or "")
        if kind is not None and callback_caller() is Caller.STRANGER:
            UNAUTHENTICATED_CALLBACKS.labels(kind, callback_outcome(response.status_code)).inc()
            stranger_log.warning(
                "callback without the right token: %s %s from %s answered %s",
                request.method,
                request.path,
                request.remote_addr,
                response.status_code,
            )
        return response
