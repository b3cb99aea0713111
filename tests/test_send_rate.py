"""SEND_RATE_PER_SECOND holds whatever SMS_BATCH_SIZE is: measured on the AT simulator's request times,
in-process (the real Postgres and Redis, no worker process)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import pytest
from sqlalchemy import insert

from shared import cycles as shared_cycles
from shared import ratelimit
from shared.at_client import AtClient
from shared.models import Contact
from shared.settings import get_settings
from simulator import Scenario, SimulatorServer, run_simulator_in_thread
from tests.sim_fixtures import SIM_KEY, sim_settings
from worker import cycles

#: What a request's arrival may lag its turn by (claiming the batch, the HTTP round trip): the limiter
#: spaces the turns exactly, the simulator sees each a few milliseconds later, not always the same few.
JITTER_SECONDS = 0.1


@pytest.fixture
def sim() -> Iterator[SimulatorServer]:
    server = run_simulator_in_thread(Scenario(), api_key=SIM_KEY, username="sandbox")
    yield server
    server.stop()


@pytest.fixture
def at(sim: SimulatorServer, monkeypatch: pytest.MonkeyPatch) -> AtClient:
    client = AtClient(sim_settings(sim))
    monkeypatch.setattr(cycles.sms, "get_at_client", lambda: client)
    return client


def sends_per_request(sim: SimulatorServer) -> list[tuple[float, int]]:
    """(time, recipients) of every /messaging request the simulator received, in order."""
    return sorted((r["time"], len(r["form"]["to"].split(","))) for r in sim.requests("/version1/messaging"))


def busiest_window(sends: list[tuple[float, int]], width: float) -> int:
    """The most SMS in any window of `width` seconds starting at a request."""
    return max(sum(n for t, n in sends if start <= t < start + width) for start, _ in sends)


@pytest.fixture
def rate_settings(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[int, int], None]]:
    """Set SEND_RATE_PER_SECOND and SMS_BATCH_SIZE for this test; the cached settings go with it."""

    def use(rate: int, batch: int) -> None:
        monkeypatch.setenv("SEND_RATE_PER_SECOND", str(rate))
        monkeypatch.setenv("SMS_BATCH_SIZE", str(batch))
        get_settings.cache_clear()

    yield use
    monkeypatch.undo()
    get_settings.cache_clear()


@pytest.mark.parametrize(("rate", "batch"), [(10, 50), (10, 4)])
def test_send_rate_holds_when_a_batch_is_larger_than_a_seconds_budget(
    session, sim, at, rate_settings, redis_client, rate, batch
) -> None:
    rate_settings(rate, batch)
    session.execute(insert(Contact), [{"phone": f"+2547110{i:05d}"} for i in range(60)])
    cycle_id = shared_cycles.start_cycle(session, "Rate test")
    cycles.plan_cycle(session, cycle_id)
    session.commit()

    assert cycles.dispatch_sms(cycle_id, budget_seconds=30) == "idle"

    sends = sends_per_request(sim)
    assert sum(n for _, n in sends) == 60
    # The limiter's one burst is a single request, at most a second's budget: so any window of w seconds
    # holds at most rate * w SMS plus one request, and the 60 SMS take (60 - one request) / rate seconds.
    request = min(batch, rate)
    assert max(n for _, n in sends) <= request
    for width in (1, 2, 3):
        assert busiest_window(sends, width) <= rate * width + request
    assert sends[-1][0] - sends[0][0] >= (60 - request) / rate - JITTER_SECONDS


def test_a_caller_asking_for_more_than_a_seconds_budget_waits_its_turn(redis_client) -> None:
    """The limiter itself: 25 tokens at 10/s are granted, and whoever asks next waits 2.5 s for them."""
    started = time.monotonic()
    assert ratelimit.acquire(redis_client, "test", 25, 10) == 0
    waited = ratelimit.acquire(redis_client, "test", 1, 10)
    between = time.monotonic() - started  # a loaded machine takes its time between the two requests
    assert 2.5 - between - 0.1 <= waited <= 2.6
