"""The Celery app. Configuration is `shared.broker.celery_config`; tasks live in `worker.tasks`."""

from __future__ import annotations

import logging
from typing import Any

from celery.signals import setup_logging, task_postrun, worker_process_init, worker_ready

from shared.broker import make_celery
from shared.db import dispose_after_fork
from shared.logs import configure_logging
from shared.settings import get_settings


def worker_config() -> dict[str, Any]:
    """What only the worker and beat need, read from the settings when Celery first asks."""
    tick, every = get_settings().schedule_tick_seconds, get_settings().housekeeping_seconds
    return {
        "include": ["worker.tasks"],
        "beat_schedule": {
            # Safety net: callbacks normally wake the drainer themselves (shared.inbox.Inbox.nudge).
            "drain-inbox": {
                "task": "reach.ingest.drain",
                "schedule": 2.0,
                "kwargs": {"linger": False},  # a woken drain may be lingering: this one takes what waits, and goes
                "options": {"expires": 10},
            },
            "housekeeping": {"task": "reach.ingest.housekeeping", "schedule": every, "options": {"expires": 60}},
            "cycle-housekeeping": {
                "task": "reach.cycle.housekeeping",
                "schedule": every,
                "options": {"expires": 60},
            },
            "send-housekeeping": {"task": "reach.send.housekeeping", "schedule": every, "options": {"expires": 60}},
            "schedules": {"task": "reach.cycle.tick", "schedule": tick, "options": {"expires": 60}},
        },
    }


app = make_celery("reach", extra=worker_config)


@setup_logging.connect
def _configure_logging(**_kwargs: object) -> None:
    configure_logging(get_settings().log_level)


@worker_process_init.connect
def _after_fork(**_kwargs: object) -> None:
    # No pooled connection, Redis socket or AT client may cross a fork (celery-reliability.md §1.5).
    dispose_after_fork()
    from shared import at_client, broker

    broker.after_fork()
    at_client.reset_at_client()
    logging.getLogger(__name__).debug("worker process initialised")


@worker_ready.connect
def _recover_at_start(sender: Any = None, **_kwargs: object) -> None:
    # A worker that starts (often: restarts after a crash) puts back what dead drainers and dispatchers left
    # at once, instead of at the first housekeeping tick; both tasks are idempotent.
    for task in ("reach.ingest.housekeeping", "reach.cycle.housekeeping"):
        app.send_task(task)
    # "A worker is running" for the answers that start cycles (shared/heartbeat.py).
    from shared import heartbeat
    from shared.store import get_store

    heartbeat.start_beating(get_store())


@task_postrun.connect
def _count_task(sender: Any = None, state: str | None = None, **_kwargs: object) -> None:
    # Counted in Redis and read by the receiver's /metrics (shared/metrics.py says why).
    from shared import metrics

    name = getattr(sender, "name", None) or "unknown"
    metrics.add(metrics.worker_client(), [("reach_tasks", {"task": name, "outcome": (state or "unknown").lower()}, 1)])
