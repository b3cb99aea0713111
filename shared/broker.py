"""Redis connections and the Celery configuration, shared by the worker (consumer) and the receiver
(which only publishes the inbox wake-up and operator sends by task name, without importing `worker`).

The values follow celery-reliability.md §0-§1: at-least-once delivery (late acks, reject on worker
loss) with idempotent tasks; short broker countdowns only; a message delivered and never acknowledged (its
worker died, or lost Redis: shared/kombu_fix.py) is put back after VISIBILITY_TIMEOUT (5 minutes).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import redis
from celery import Celery
from kombu import Queue
from sqlalchemy import Engine, inspect, text

from shared import kombu_fix
from shared.db import build_engine, prepare_sqlite, sqlite_connect_args
from shared.settings import Settings, get_settings

#: Seconds before a message a worker took but never acknowledged goes back to its queue. Larger than
#: any task's hard time limit (prefetch is 1 for the slow queues), so a running task is never doubled.
VISIBILITY_TIMEOUT = 300

QUEUES = ("ingest", "send", "cycle", "celery")
#: Routing by task name (first match wins); the one place that says which queue a task runs on.
TASK_ROUTES = [
    {"reach.ingest.*": {"queue": "ingest"}},
    {"reach.send.*": {"queue": "send"}},
    {"reach.cycle.dispatch_*": {"queue": "send"}},
    {"reach.cycle.*": {"queue": "cycle"}},
]


def redis_url(settings: Settings | None = None) -> str:
    settings = settings or get_settings()
    if not settings.redis_url:
        raise RuntimeError("REDIS_URL is not set")
    return settings.redis_url


@functools.cache
def get_redis() -> redis.Redis:
    """The process's Redis client for the inbox and caches (a connection pool; fork-safe by pid)."""
    return redis.Redis.from_url(
        redis_url(),
        socket_timeout=5,
        socket_connect_timeout=3,
        health_check_interval=25,
        retry_on_timeout=True,
    )


def embedded_transport_options() -> dict[str, Any]:
    """kombu's SQLAlchemy transport on a SQLite file: these options go to its `create_engine()`.

    The file is put in WAL mode, with kombu's tables, by `prepare_embedded_broker` (`reach up` does it before
    starting the worker); the busy timeout lets the receiver, worker and beat processes wait for each other's writes.
    """
    return {"connect_args": sqlite_connect_args()}


def prepare_embedded_broker(url: str) -> None:
    """The embedded broker's SQLite file in WAL mode with kombu's tables in it, before any process opens it.

    kombu creates its tables when a process first opens the broker, under a lock of that process only: the
    receiver, worker and beat `reach up` starts together raced, and one failed with `table kombu_queue
    already exists`. Created here once, their own `create_all` finds them."""
    from kombu.transport.sqlalchemy.models import metadata

    prepare_sqlite(url)
    engine = build_engine(url.removeprefix("sqla+"))
    try:
        metadata.create_all(engine)
    finally:
        engine.dispose()


@functools.cache
def _embedded_broker_engine(url: str) -> Engine:
    return build_engine(url.removeprefix("sqla+"))


def prune_delivered_messages(url: str) -> int:
    """Delete the messages kombu's SQLAlchemy transport has delivered: it keeps them (`visible` false)
    and never reads them again (an unacknowledged one is put back as a new row), so the file only grows."""
    with _embedded_broker_engine(url).begin() as connection:
        if not inspect(connection).has_table("kombu_message"):
            return 0
        return int(connection.execute(text("DELETE FROM kombu_message WHERE visible = 0")).rowcount)


def after_fork() -> None:
    """No broker connection may cross a fork: kombu's SQLAlchemy transport caches engines per URL."""
    get_redis.cache_clear()
    _embedded_broker_engine.cache_clear()
    from kombu.transport import sqlalchemy as kombu_sqla

    for engine, _sessions in kombu_sqla.Channel._engines.values():
        engine.dispose(close=False)
    kombu_sqla.Channel._engines.clear()


def celery_config(settings: Settings | None = None) -> dict[str, Any]:
    settings = settings or get_settings()
    if not settings.uses_redis:
        # Embedded mode: the same configuration over kombu's SQLAlchemy transport (no Redis options).
        return {**_common_config(), "broker_url": settings.effective_broker_url,
                "broker_transport_options": embedded_transport_options()}  # fmt: skip
    url = redis_url(settings)
    transport = {
        "visibility_timeout": VISIBILITY_TIMEOUT,
        # kombu >= 5.7: look for abandoned messages every 15 s instead of every ~100 s.
        "unacked_restore_interval": 15,
        "unacked_restore_throttle": 1,
        "socket_timeout": 30,
        "socket_connect_timeout": 5,
        "socket_keepalive": True,
        "retry_on_timeout": True,
        "health_check_interval": 25,
    }
    return {
        **_common_config(),
        "broker_url": url,
        "broker_transport_options": transport,
        "visibility_timeout": VISIBILITY_TIMEOUT,
    }


def _common_config() -> dict[str, Any]:
    return {
        "broker_connection_retry_on_startup": True,
        "broker_connection_max_retries": None,
        "task_serializer": "json",
        "accept_content": ["json"],
        "result_serializer": "json",
        "task_ignore_result": True,
        "result_backend": None,
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "task_track_started": False,
        "worker_cancel_long_running_tasks_on_connection_loss": True,
        "worker_prefetch_multiplier": 1,
        "worker_max_tasks_per_child": 1000,
        "worker_max_memory_per_child": 250_000,  # KiB
        "worker_soft_shutdown_timeout": 10,
        "task_time_limit": 120,
        "task_soft_time_limit": 110,
        "task_default_queue": "celery",
        # Callbacks, sends and planning each get their own queue so a long cycle never delays a callback.
        "task_routes": TASK_ROUTES,
        "task_queues": [Queue(name) for name in QUEUES],
        "task_create_missing_queues": True,
        "worker_hijack_root_logger": False,
        "enable_utc": True,
        "timezone": "UTC",
    }


def make_celery(
    name: str, settings: Settings | None = None, extra: Callable[[], dict[str, Any]] | None = None
) -> Celery:
    """A Celery app whose configuration is read from the settings when first used, not at import."""
    kombu_fix.apply()  # a worker that loses Redis with a task in flight must reconnect, not stop
    app = Celery(name)
    app.add_defaults(lambda: {**celery_config(settings), **(extra() if extra else {})})
    return app
