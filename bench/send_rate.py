"""Send rate: the rate SMS actually reach AT against SEND_RATE_PER_SECOND, for a few SMS_BATCH_SIZEs.

In-process: a cycle of N new contacts is planned on a fresh database and dispatched by `dispatch_sms`
(the worker's own code, with the shared Redis limiter) to the AT simulator in a thread; the rate is read
from the simulator's request times. N is a few seconds' worth at the rate. The first request goes at
once (the limiter's one burst: a request of at most a second's budget), so the achieved rate is the SMS
after it divided by the time from it to the last request. Any window of w seconds holds at most
rate x w SMS plus that one request.

    python -m bench.send_rate --size small
"""

from __future__ import annotations

import sys
import time
from typing import Any

from bench.common import header, load_note, services, size_parser, table, use_services_here

#: (SEND_RATE_PER_SECOND, SMS_BATCH_SIZE) pairs, and how many seconds' worth of SMS each sends.
PAIRS = {
    "tiny": ([(10, 50)], 2),
    "small": ([(10, 50), (10, 4), (50, 100), (50, 20), (100, 1000)], 4),
    "full": ([(10, 50), (10, 4), (50, 100), (50, 20), (100, 1000), (200, 100)], 15),
}


def run_pair(svc: Any, sim: Any, rate: int, batch: int, seconds: int) -> list[Any]:
    """Dispatch a cycle of `rate * seconds` SMS at this rate and batch size; one table row."""
    from sqlalchemy import delete, insert

    from shared import cycles as shared_cycles
    from shared.db import session_scope
    from shared.models import Contact, Cycle, CycleItem, Message
    from worker import cycles

    with use_services_here(svc, send_rate_per_second=rate, sms_batch_size=batch):
        svc.redis.flushdb()
        sim.reset()
        n = rate * seconds
        with session_scope() as session:
            for model in (Message, CycleItem, Cycle, Contact):
                session.execute(delete(model))
            session.execute(insert(Contact), [{"phone": f"+2547{i:08d}"} for i in range(n)])
            cycle_id = shared_cycles.start_cycle(session, "Send rate benchmark")
            cycles.plan_cycle(session, cycle_id)
        started = time.monotonic()
        while cycles.dispatch_sms(cycle_id, budget_seconds=60) == "more":
            pass
        elapsed = time.monotonic() - started
        sends = sorted((r["time"], len(r["form"]["to"].split(","))) for r in sim.requests("/version1/messaging"))
        span = sends[-1][0] - sends[0][0]
        achieved = (n - sends[0][1]) / span if span else float("inf")
        busiest = [busiest_window(sends, width) for width in (1.0, 0.9)]
        return [rate, batch, n, len(sends), max(k for _, k in sends), f"{achieved:.1f}", *busiest, f"{elapsed:.1f}"]


def busiest_window(sends: list[tuple[float, int]], width: float) -> int:
    """The most SMS in any window of `width` seconds that starts at a request.

    Turns a second apart land a few milliseconds early or late, so a 1 s window can hold two of them: the
    0.9 s window shows what the limiter allows without that jitter.
    """
    return max(sum(k for t, k in sends if start <= t < start + width) for start, _ in sends)


def main(argv: list[str] | None = None) -> None:
    args = size_parser(__doc__.splitlines()[0]).parse_args(argv)
    pairs, seconds = PAIRS[args.size]
    from shared.at_client import AtClient
    from simulator import Scenario, run_simulator_in_thread
    from tests.sim_fixtures import SIM_KEY, sim_settings
    from worker import cycles

    header("Send rate against SEND_RATE_PER_SECOND", argv if argv is not None else sys.argv)
    rows = []
    with services("send_rate") as svc:
        sim = run_simulator_in_thread(Scenario(), api_key=SIM_KEY, username="sandbox")
        try:
            client = AtClient(sim_settings(sim))
            cycles.sms.get_at_client = lambda: client  # the simulator in this process, not a configured AT
            rows = [run_pair(svc, sim, rate, batch, seconds) for rate, batch in pairs]
        finally:
            sim.stop()
    headers = ("rate setting /s", "batch size", "SMS", "requests", "largest request", "achieved /s")
    table((*headers, "busiest 1 s window", "busiest 0.9 s window", "dispatch s"), rows)
    print(f"\n{load_note()}")


if __name__ == "__main__":
    main()
