"""What one simulator app holds: the scenario and its fault budget, the logs, and the callback poster.

Callbacks are posted form-encoded by the dispatcher's lanes (`simulator.dispatch`) to
`callback_base_url + "/<kind>"`, with `?token=` when given, and posted again (up to the scenario's
`callback_attempts`) while they are not answered 2xx. Each lane posts on its own keep-alive connection
(`simulator.callback_http`).

The request and callback logs keep the most recent `LOG_LIMIT` entries each: a simulator that sends a
million reports must not keep a million entries (and their forms) in memory.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections import deque
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, quote_plus

from flask import current_app

from simulator.callback_http import CallbackError, CallbackPoster
from simulator.dispatch import DEFAULT_MAX_PENDING, Dispatcher
from simulator.scenario import Fault, Scenario

log = logging.getLogger(__name__)

#: The first back-off between two posts of a failed callback (doubling), and each post's timeouts.
CALLBACK_BACKOFF_S = 0.05
CALLBACK_TIMEOUT_S = (2.0, 5.0)
#: Attempts per callback of the default scenario (`Scenario.callback_attempts`).
CALLBACK_ATTEMPTS = Scenario().callback_attempts
#: Entries each of the request and callback logs keeps (the most recent).
LOG_LIMIT = 10_000
#: What the callback log and the simulator's log lines show in place of the webhook token.
REDACTED = "[redacted]"

#: Given the reply body of a callback (None when every attempt failed), decides what comes next.
Then = Callable[[str | None], None]
#: Reads a callback's reply into extra fields for the callback log (the voice XML check).
ReadReply = Callable[[str], dict[str, Any]]


class SimState:
    """Everything one simulator app holds: scenario, fault budget, logs and the callback dispatcher."""

    def __init__(
        self,
        scenario: Scenario,
        *,
        api_key: str,
        username: str,
        callback_base_url: str | None,
        webhook_token: str | None,
        senders: int = 1,
        max_pending: int = DEFAULT_MAX_PENDING,
    ) -> None:
        self.api_key = api_key
        self.username = username
        self.callback_base_url = callback_base_url.rstrip("/") if callback_base_url else None
        self.webhook_token = webhook_token or None
        self.dispatcher = Dispatcher(lanes=senders, max_pending=max_pending)
        self.stopping = threading.Event()
        self._lock = threading.Lock()
        self._poster = CallbackPoster(self.callback_base_url, CALLBACK_TIMEOUT_S) if self.callback_base_url else None
        self._requests: deque[dict[str, Any]] = deque(maxlen=LOG_LIMIT)
        self._callbacks: deque[dict[str, Any]] = deque(maxlen=LOG_LIMIT)
        #: Gates of requests held by the scenario's `hold`, oldest first.
        self._held: list[threading.Event] = []
        self.set_scenario(scenario)

    def wall_clock(self) -> datetime:
        """The simulator's wall-clock time: now, plus however far its clock was advanced (`dnd_hours`)."""
        return datetime.fromtimestamp(time.time() + self.dispatcher.offset, UTC)

    # -- scenario and logs --------------------------------------------------------------------------

    def set_scenario(self, scenario: Scenario) -> None:
        """Replace the scenario; its faults start with their full counts."""
        with self._lock:
            self.scenario = scenario
            self.scenario_set_at = self.dispatcher.now()  # outages count from here
            self._faults = [[fault, fault.count] for fault in scenario.faults]
            self._rng = random.Random(scenario.seed)

    def reset(self) -> None:
        """Forget requests and callbacks, drop pending callbacks, refill the faults, release held requests."""
        self.release()
        self.dispatcher.clear()
        with self._lock:
            self._requests.clear()
            self._callbacks.clear()
        self.set_scenario(self.scenario)

    def requests(self) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(r) for r in self._requests]

    def callbacks(self) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(c) for c in self._callbacks]

    def record_request(self, entry: dict[str, Any]) -> None:
        with self._lock:
            self._requests.append(entry)

    def take_fault(self, path: str) -> Fault | None:
        """The fault that answers this request, if any; each use spends one of its count."""
        with self._lock:
            for budget in self._faults:
                if budget[1] > 0 and budget[0].matches(path):
                    budget[1] -= 1
                    return budget[0]
        return None

    def shuffled(self, steps: list[Any]) -> list[Any]:
        """`steps` in another order (when there is one), from the scenario's seeded generator."""
        with self._lock:
            out = list(steps)
            self._rng.shuffle(out)
        if out == steps and len(set(map(repr, steps))) > 1:
            out.reverse()
        return out

    # -- held requests (the scenario's `hold`) -------------------------------------------------------------

    def wait_if_held(self, path: str) -> None:
        """Hold this request until `release` lets it go (or the simulator stops), when the scenario says so."""
        with self._lock:
            if not self.scenario.holds(path):
                return
            gate = threading.Event()
            self._held.append(gate)
        while not gate.wait(0.05) and not self.stopping.is_set():
            pass
        with self._lock:
            if gate in self._held:
                self._held.remove(gate)

    def held(self) -> int:
        with self._lock:
            return len(self._held)

    def release(self, count: int | None = None) -> int:
        """Let the `count` oldest held requests go (all when None); returns how many were let go."""
        with self._lock:
            gates = self._held if count is None else self._held[:count]
            self._held = [] if count is None else self._held[count:]
        for gate in gates:
            gate.set()
        return len(gates)

    def close(self) -> None:
        """Stop the dispatcher and wake requests held by a timeout fault or by `hold`."""
        self.release()
        self.stopping.set()
        self.dispatcher.stop()
        if self._poster is not None:
            self._poster.close()

    # -- callbacks ------------------------------------------------------------------------------------

    def post_later(
        self,
        delay: float,
        kind: str,
        form: dict[str, str],
        then: Then | None = None,
        read: ReadReply | None = None,
        *,
        key: str | None = None,
    ) -> None:
        """Post a callback `delay` s from now on the simulator's clock, after the earlier ones of `key` (a
        message id, a call's session id); `then` gets the reply body (None if every attempt failed);
        `read` turns a 2xx reply into fields of the callback log."""
        if self._poster is None:
            return
        self.dispatcher.schedule(delay, lambda: self._post(kind, form, 1, then, read, key), key)

    def _redact(self, text: str) -> str:
        """`text` without the webhook token, as given or URL-encoded: a requests error quotes the URL with its
        query string, and neither a log nor the callback log (`GET /_sim/callbacks`, open to anyone on
        loopback) may carry the token."""
        if not self.webhook_token:
            return text
        for spelling in {self.webhook_token, quote(self.webhook_token, safe=""), quote_plus(self.webhook_token)}:
            text = text.replace(spelling, REDACTED)
        return text

    def _post(
        self, kind: str, form: dict[str, str], attempt: int, then: Then | None, read: ReadReply | None, key: str | None
    ) -> None:
        url = f"{self.callback_base_url}/{kind}"
        shown = f"{url}?token={REDACTED}" if self.webhook_token else url  # until the post says where it went
        entry: dict[str, Any] = {"kind": kind, "url": shown, "form": form, "attempt": attempt, "time": time.time()}
        entry.update(status=None, error=None, reply=None, sim_clock=self.dispatcher.offset)
        params = {"token": self.webhook_token} if self.webhook_token else None
        assert self._poster is not None  # post_later schedules nothing without a callback URL
        try:
            answer = self._poster.post(kind, form, params)
            entry.update(status=answer.status, reply=self._redact(answer.text), url=self._redact(answer.url))
        except CallbackError as exc:
            entry["error"] = self._redact(str(exc))
        ok = entry["status"] is not None and 200 <= entry["status"] < 300
        if ok and read is not None:
            entry.update(read(entry["reply"]))
        with self._lock:
            self._callbacks.append(entry)
            attempts = self.scenario.callback_attempts
        if not ok and attempt < attempts:
            log.info("callback %s failed (%s); retrying", url, entry["error"] or entry["status"])
            backoff = CALLBACK_BACKOFF_S * 2 ** (attempt - 1)
            self.dispatcher.schedule(backoff, lambda: self._post(kind, form, attempt + 1, then, read, key), key)
            return
        if not ok:
            log.warning("callback %s failed %d time(s); giving up", url, attempt)
        if then is not None:
            then(entry["reply"] if ok else None)


def current_state() -> SimState:
    """The state of the simulator app serving this request."""
    return current_app.extensions["reach_simulator"]
