"""The async front counts a batch of queued callbacks in one write per series (web/metrics.py `observe_many`):
the histogram must read exactly as if each had been observed one by one, in this prometheus_client."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, Histogram

from web.metrics import REQUEST_SECONDS, observe_many

AMOUNTS = [0.0001, 0.005, 0.0050001, 0.02, 0.02, 0.3, 7.5, 12.0, 0.0]


def _samples(registry: CollectorRegistry) -> dict[tuple[str, tuple], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for metric in registry.collect()
        for sample in metric.samples
        if not sample.name.endswith("_created")
    }


def test_observing_many_at_once_reads_as_observing_each() -> None:
    one_by_one, at_once = CollectorRegistry(), CollectorRegistry()
    buckets = REQUEST_SECONDS._upper_bounds[:-1]  # the receiver's own buckets (the last is +Inf)
    first = Histogram("seconds", "x", ["endpoint"], buckets=buckets, registry=one_by_one)
    second = Histogram("seconds", "x", ["endpoint"], buckets=buckets, registry=at_once)
    for amount in AMOUNTS:
        first.labels("callbacks.dlr").observe(amount)
    observe_many(second.labels("callbacks.dlr"), AMOUNTS)
    expected, got = _samples(one_by_one), _samples(at_once)
    assert got.keys() == expected.keys()
    for key, value in expected.items():
        assert got[key] == pytest.approx(value, rel=1e-12), key
    assert got[("seconds_count", (("endpoint", "callbacks.dlr"),))] == len(AMOUNTS)
