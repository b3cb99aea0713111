"""Worker-side metrics: counters kept in Redis, read by the receiver's `/metrics` at scrape time.

Why Redis and not an HTTP port per worker: workers are Celery prefork children that come and go
(`worker_max_tasks_per_child`), on any number of nodes. Counting into one Redis hash (the broker Reach
already depends on) gives Prometheus a single scrape target, survives child recycling without
multiprocess files, and needs no per-node port or service discovery. One HINCRBY pipeline per committed
transaction or finished task is cheap next to the Postgres commit it follows.

Counts made inside a database transaction (`count_on_commit`) reach Redis only once that transaction
commits, so a rolled-back batch (and its replay) is never counted twice. Label values come from bounded
vocabularies (`bounded()`): never a phone number, an id or free text.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Iterable, Iterator
from typing import Any

import redis
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import event
from sqlalchemy.orm import Session

from shared import inbox
from shared.broker import QUEUES
from shared.status_policy import Kind, rules_of

log = logging.getLogger(__name__)

COUNTERS = "reach:metrics:counters"
#: Label value for anything outside a bounded vocabulary.
OTHER = "other"

#: Every worker counter: name (without `_total`) -> (help, label names). The one list both sides read.
WORKER_COUNTERS: dict[str, tuple[str, tuple[str, ...]]] = {
    "reach_tasks": ("Celery tasks finished, by task name and outcome", ("task", "outcome")),
    "reach_sms_sends": (
        "Recipients in AT's answer to an SMS send, by statusCode and policy action",
        ("code", "action"),
    ),
    "reach_sms_delivery_reports": (
        "New delivery reports applied, by status and failure reason",
        ("status", "failure_reason"),
    ),
    "reach_calls_placed": ("Calls handed to AT, by result (queued or failed)", ("result",)),
    "reach_calls_ended": ("Final voice callbacks applied, by hang-up cause and outcome", ("hangup_cause", "outcome")),
    "reach_callbacks_parked": ("Callbacks parked in the inbox's dead-letter list, by kind", ("kind",)),
    "reach_inbox_batches_released": (
        "Drained batches sent back to the inbox untouched, by cause (database, store, time_limit, other)",
        ("cause",),
    ),
    "reach_sms_sent_twice": ("Interrupted SMS sent again whose first attempt AT reported later", ()),
    "reach_alerts": (
        "Alerts raised, by kind (cycle_paused, dlr_silence, callback_parked, at_credentials, network_incident, "
        "network_recovered)",
        ("kind",),
    ),
}


def bounded(value: object, kind: Kind) -> str:
    """`value` if the policy table knows it for `kind`, "none" when empty, else "other"."""
    text = "" if value is None else str(value).strip()
    if not text:
        return "none"
    return text if text in rules_of(kind) else OTHER


def _field(name: str, labels: dict[str, str]) -> str:
    expected = WORKER_COUNTERS[name][1]
    if set(labels) != set(expected):
        raise ValueError(f"{name} takes labels {expected}, got {sorted(labels)}")
    return json.dumps([name, *(labels[k] for k in expected)], separators=(",", ":"))


def worker_client() -> redis.Redis | None:
    """Where workers count: Reach's Redis. None in the embedded mode (no REDIS_URL), which keeps only the
    receiver's own metrics: the embedded mode is for trying Reach, not for a Prometheus setup."""
    from shared.broker import get_redis
    from shared.settings import get_settings

    return get_redis() if get_settings().uses_redis else None


def add(client: redis.Redis | None, counts: Iterable[tuple[str, dict[str, str], int]]) -> None:
    """Add counts to Redis now; a Redis error is logged, never raised (metrics must not fail work)."""
    if client is None:
        return
    totals: Counter[str] = Counter()
    for name, labels, amount in counts:
        totals[_field(name, labels)] += amount
    if not totals:
        return
    try:
        with client.pipeline(transaction=False) as pipe:
            for field, amount in totals.items():
                pipe.hincrby(COUNTERS, field, amount)
            pipe.execute()
    except redis.RedisError as exc:
        log.warning("metrics not recorded (%s): %s", exc.__class__.__name__, dict(totals))


def count_on_commit(session: Session, name: str, amount: int = 1, **labels: str) -> None:
    """Count once `session`'s transaction commits; forgotten if it rolls back."""
    _field(name, labels)  # a wrong label set fails here, in the caller's code, not at commit
    if not session.in_transaction():
        session.begin()  # so the count belongs to a transaction whose end we hear about
    session.info.setdefault("reach.metrics", []).append((name, labels, amount))


@event.listens_for(Session, "after_commit")
def _flush_on_commit(session: Session) -> None:
    pending = session.info.pop("reach.metrics", None)
    if pending:
        add(worker_client(), pending)


@event.listens_for(Session, "after_soft_rollback")
def _forget_on_rollback(session: Session, previous_transaction: Any) -> None:
    # Only the outermost transaction's end decides (a savepoint's rollback keeps the outer counts).
    if previous_transaction.parent is None:
        session.info.pop("reach.metrics", None)


def celery_queue_keys(queue: str) -> list[str]:
    """Redis lists kombu keeps for one queue: the queue itself and its priority sub-queues."""
    return [queue, *(f"{queue}\x06\x16{priority}" for priority in (3, 6, 9))]


class RedisCollector(Collector):
    """Read at scrape time: the workers' counters, the callback inbox and the Celery queue lengths."""

    def __init__(self, client: redis.Redis) -> None:
        self.redis = client

    def collect(self) -> Iterator[Any]:
        up = GaugeMetricFamily("reach_redis_up", "1 if the receiver could read Reach's Redis at scrape time")
        try:
            families = list(self._read())
        except redis.RedisError as exc:
            log.warning("metrics: Redis unreadable: %s", exc.__class__.__name__)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        yield from families

    def _read(self) -> Iterator[Any]:
        with self.redis.pipeline(transaction=False) as pipe:
            pipe.hgetall(COUNTERS)
            pipe.llen(inbox.INBOX)
            pipe.zcard(inbox.CLAIMS)
            pipe.llen(inbox.DEAD_LETTERS)
            for queue in QUEUES:
                for key in celery_queue_keys(queue):
                    pipe.llen(key)
            counters, depth, claimed, dead, *lengths = pipe.execute()
        yield from _counter_families(counters)
        yield GaugeMetricFamily("reach_inbox_depth", "Callbacks waiting in the Redis inbox", value=depth)
        yield GaugeMetricFamily("reach_inbox_claimed_batches", "Inbox batches claimed by drainers", value=claimed)
        yield GaugeMetricFamily("reach_inbox_dead_letters", "Callbacks that could not be applied", value=dead)
        queues = GaugeMetricFamily("reach_celery_queue_length", "Messages waiting in a Celery queue", labels=["queue"])
        per_queue = len(celery_queue_keys(""))
        for i, queue in enumerate(QUEUES):
            queues.add_metric([queue], sum(lengths[i * per_queue : (i + 1) * per_queue]))
        yield queues


def _counter_families(raw: dict[bytes, bytes]) -> Iterator[CounterMetricFamily]:
    families = {
        name: CounterMetricFamily(name, help_text, labels=list(labels))
        for name, (help_text, labels) in WORKER_COUNTERS.items()
    }
    for field, value in raw.items():
        try:
            name, *label_values = json.loads(field)
            families[name].add_metric(label_values, int(value))
        except (ValueError, KeyError, TypeError):
            log.warning("metrics: ignoring unknown counter field %r", field)
    yield from families.values()
