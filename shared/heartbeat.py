"""Whether a worker is running, for the answers that start work: a cycle requested while no worker runs is
recorded and says so (issue 13). Each worker marks the store (Redis, or the database's kv table without
Redis) every BEAT_SECONDS; the mark lapses ALIVE_SECONDS after the last worker stopped beating.

A mark rather than Celery's `inspect ping`: a ping waits out its whole timeout when no worker answers
(inside the request), and the embedded broker (kombu's SQLAlchemy transport) carries no broadcast at all."""

from __future__ import annotations

import logging
import threading

from shared.store import STORE_ERRORS, Store

log = logging.getLogger(__name__)

KEY = "reach:worker:alive"
BEAT_SECONDS = 15.0
ALIVE_SECONDS = 60.0
NO_WORKER = "no worker is running: the cycle will start when one does"


def beat_once(store: Store) -> None:
    store.mark(KEY, ALIVE_SECONDS)


def worker_alive(store: Store) -> bool:
    """True when a worker beat within ALIVE_SECONDS; also True when the store cannot tell (no false alarm)."""
    try:
        return store.is_marked(KEY)
    except STORE_ERRORS as exc:
        log.warning("could not read the worker heartbeat: %s", exc)
        return True


def start_beating(store: Store) -> threading.Event:
    """Beat from a daemon thread until the returned event is set (a failed beat is retried at the next one)."""
    stop = threading.Event()

    def run() -> None:
        while not stop.is_set():
            try:
                beat_once(store)
            except STORE_ERRORS as exc:
                log.warning("worker heartbeat failed: %s", exc)
            stop.wait(BEAT_SECONDS)

    threading.Thread(target=run, name="reach-heartbeat", daemon=True).start()
    return stop
