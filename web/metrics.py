"""`GET /metrics`: the receiver's own counters and latencies, plus the workers' counters and the queue
depths read from Redis at scrape time (shared/metrics.py).

The receiver runs several processes (web/serve.py). With PROMETHEUS_MULTIPROC_DIR set (an empty directory,
created by web/serve.py before its workers start; each marks its files dead when it stops), every scrape
sums all processes' files, whichever process answers. Without it (one process: `flask run`, tests) the
process's default registry is served.
"""

from __future__ import annotations

import bisect
import os
import time
from collections.abc import Iterator
from typing import Any

from flask import Blueprint, Flask, Response, g, request
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from shared.metrics import RedisCollector
from web.auth import require_metrics_reader
from web.services import services

bp = Blueprint("metrics", __name__)

CALLBACKS = Counter("reach_callbacks", "AT callbacks answered, by kind and outcome", ["kind", "outcome"])
#: Callbacks without the right webhook token while one is set (web/callers.py), by kind and outcome: someone
#: other than AT probing or flooding the receiver (or AT's callback URLs lost their `?token=`).
UNAUTHENTICATED_CALLBACKS = Counter(
    "reach_unauthenticated_callbacks",
    "Callbacks without the right webhook token, by kind and outcome (forbidden, limited, ...)",
    ["kind", "outcome"],
)
REQUEST_SECONDS = Histogram(
    "reach_http_request_duration_seconds",
    "Time to answer an HTTP request, by endpoint (the route, never the path) and method",
    ["endpoint", "method"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)

#: Callback views -> the kind label. `communicate` is a voice callback or an operator send.
CALLBACK_KINDS = {
    "callbacks.dlr": "dlr",
    "callbacks.receive_sms": "sms",
    "callbacks.ussd_step": "ussd",
    "callbacks.voice": "voice",
    "callbacks.communicate": "communicate",
}


def callback_outcome(status: int) -> str:
    """What an HTTP status means for a callback, as the operator graphs it."""
    if status < 300:
        return "queued"
    if status in (401, 403):
        return "forbidden"
    if status == 429:
        return "limited"
    if status == 503:
        return "unavailable"
    if 400 <= status < 500:
        return "bad_input"
    return "error"


def observe_many(histogram: Any, amounts: list[float]) -> None:
    """`histogram.observe(amount)` for each of `amounts` (a labelled series), as one increment of its sum and
    one per bucket hit, not two per amount (in multiprocess mode each is a write to this process's file).
    Through prometheus_client's own parts (`_sum`, `_buckets`, `_upper_bounds`, as its `observe` uses them);
    one by one where they are not there (tests/test_metrics_batch.py compares the two)."""
    parts = [getattr(histogram, name, None) for name in ("_sum", "_buckets", "_upper_bounds")]
    if None in parts:
        for amount in amounts:
            histogram.observe(amount)
        return
    total, buckets, bounds = parts
    hits = [0] * len(bounds)
    for amount in amounts:
        hits[bisect.bisect_left(bounds, amount)] += 1  # the first bound >= amount, as `observe` picks it
    total.inc(sum(amounts))
    for bucket, count in zip(buckets, hits, strict=True):
        if count:
            bucket.inc(count)


def init_app(app: Flask) -> None:
    app.register_blueprint(bp)

    @app.before_request
    def _start_clock() -> None:
        g.reach_started = time.perf_counter()

    @app.after_request
    def _observe(response: Response) -> Response:
        started = g.get("reach_started")
        endpoint = request.endpoint or "unmatched"  # 404s share one label: paths are unbounded
        if started is not None:
            REQUEST_SECONDS.labels(endpoint, request.method).observe(time.perf_counter() - started)
        kind = CALLBACK_KINDS.get(endpoint)
        if kind is not None:
            CALLBACKS.labels(kind, callback_outcome(response.status_code)).inc()
        return response


class _ProcessRegistry(Collector):
    """This process's metrics, for the single-process fallback."""

    def collect(self) -> Iterator[Any]:
        yield from REGISTRY.collect()


def scrape_registry() -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        MultiProcessCollector(registry)
    else:
        registry.register(_ProcessRegistry())
    redis_client = getattr(services().store, "redis", None)  # none in the embedded mode (shared/metrics.py)
    if redis_client is not None:
        registry.register(RedisCollector(redis_client))
    return registry


@bp.get("/metrics")
def metrics() -> Response:
    require_metrics_reader()
    return Response(generate_latest(scrape_registry()), mimetype=CONTENT_TYPE_LATEST)
