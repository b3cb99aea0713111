"""Time to reach: how soon a cycle's contacts are reached with `next_cycle`, a fixed FALLBACK_AFTER_SECONDS and
`auto` (issue 14), and what each reached contact costs.

Five simulated networks (bench/reach_population.py), each with its own delivery-report pace and a share of SMS
that fail or never get a final report, so calls are needed; the simulator decides each call (60 % answer and
press 1). Every mode runs on a fresh database with the same contacts and the same seeded networks: a real worker
(prefork 2, beat), the receiver (gunicorn gevent, 2 workers) and the simulator on loopback. Time is scaled:
one benchmark second stands for a real minute (SCALE), for the report delays, the waits, the cycle interval, the
call retry delay and housekeeping; Reach's own throughput is not scaled.

- `next_cycle` (the baseline, the seed's workflow): a second cycle starts NEXT_CYCLE_SECONDS after the first
  (an hour: the shortest a schedule allows) and calls the contacts still `pending` or `inactive`.
- `fixed`: `same_cycle` with FALLBACK_AFTER_SECONDS at its default, 900 s.
- `auto`: `same_cycle` with FALLBACK_AFTER_SECONDS=auto (bounds 60..3600 s); a warm-up cycle to other contacts
  on the same networks first, so each network's P95 is known, and every contact carries the network of its
  last report (as one with a history does).

Reached: the first `Success` report of the cycle's SMS, or the customer pressing 1 in a call of the run, from
the first cycle's start. Cost: what the simulator charged (AT's answer for SMS, the final callback's `amount`
for calls) over the contacts reached.

    python -m bench.time_to_reach --size full      # 100,000 contacts
"""

from __future__ import annotations

import json
import math
import signal
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal

import requests
from sqlalchemy import create_engine, text

from bench import reach_population as pop
from bench.common import (
    API_TOKEN,
    BIN,
    Services,
    free_port,
    header,
    http_server,
    load_note,
    services,
    size_parser,
    table,
)
from bench.receiver import SERVERS
from shared import report_delays
from shared.inbox import CLAIMS, INBOX
from tests.services import WorkerProcess

SIZES = {"tiny": 500, "small": 10_000, "full": 100_000}
WARMUP_PER_NETWORK = {"tiny": 50, "small": 300, "full": 600}
#: SMS handed to AT per second: the simulator posts every callback from one thread, which must keep up.
SEND_RATE = {"tiny": 200, "small": 400, "full": 400}
MAX_CALLS_IN_FLIGHT = 100
SEED = 14
MODES = ("next_cycle", "fixed", "auto")
FIXED_WAIT = 900
NEXT_CYCLE_SECONDS = 3600
#: What the settings get, in benchmark seconds (whole seconds: the settings take no fractions).
WAITS = {"fixed": FIXED_WAIT // pop.SCALE, "min": 60 // pop.SCALE, "max": 3600 // pop.SCALE}
INTERVAL = NEXT_CYCLE_SECONDS / pop.SCALE
AUDIENCE, WARMUP = "audience", "warmup"
MESSAGE = "Your bill is ready"


def env_for(svc: Services, mode: str, size: str, sim_url: str) -> dict[str, str]:
    return svc.env(
        at_sms_url=f"{sim_url}/version1",
        at_voice_url=sim_url,
        send_rate_per_second=SEND_RATE[size],
        max_calls_in_flight=MAX_CALLS_IN_FLIGHT,
        call_window="always",
        housekeeping_seconds=1,
        call_retry_delay_seconds=600 // pop.SCALE,
        dlr_silence_seconds=1800 // pop.SCALE,
        fallback_after_seconds="auto" if mode == "auto" else WAITS["fixed"],
        fallback_after_min_seconds=WAITS["min"],
        fallback_after_max_seconds=WAITS["max"],
    )


# -- the stack ---------------------------------------------------------------------------------------------------


@dataclass
class Stack:
    svc: Services
    receiver: str
    simulator: str

    def api(self, method: str, path: str, **body: object) -> dict:
        headers = {"Authorization": f"Bearer {API_TOKEN}"}
        response = requests.request(method, f"{self.receiver}{path}", headers=headers, json=body or None, timeout=30)
        response.raise_for_status()
        return response.json()

    def start_cycle(self, tag: str, fallback: str) -> int:
        return int(self.api("POST", "/api/cycles", message=MESSAGE, voice_message=MESSAGE, tags=[tag],
                            fallback=fallback)["id"])  # fmt: skip

    def set_scenario(self, raw: dict) -> None:
        requests.post(f"{self.simulator}/_sim/scenario", json=raw, timeout=60).raise_for_status()

    def quiet(self) -> bool:
        """Nothing left to post by the simulator, nothing left in the inbox for the worker."""
        idle = requests.get(f"{self.simulator}/_sim/idle", timeout=10).json()["idle"]
        return idle and self.svc.redis.llen(INBOX) == 0 and self.svc.redis.zcard(CLAIMS) == 0

    def scalar(self, sql: str, **params: object) -> object:
        engine = create_engine(self.svc.database_url)
        try:
            with engine.connect() as connection:
                return connection.scalar(text(sql), params)
        finally:
            engine.dispose()


@contextmanager
def stack(svc: Services, mode: str, size: str) -> Iterator[Stack]:
    """The simulator, the receiver and a worker on these services."""
    sim_port, web_port = free_port(), free_port()
    sim_url, web_url = f"http://127.0.0.1:{sim_port}", f"http://127.0.0.1:{web_port}"
    env = env_for(svc, mode, size, sim_url)
    scenario_file = svc.workdir / "scenario.json"
    scenario_file.write_text(json.dumps(pop.scenario(SEED)), encoding="utf-8")
    sim_cmd = [str(BIN / "python"), "-m", "simulator", "--port", str(sim_port), "--scenario", str(scenario_file),
               "--callback-url", web_url]  # fmt: skip
    web_cmd = SERVERS["gevent-w2"].command("web:create_app()", web_port)
    with (
        http_server(sim_cmd, sim_port, env, svc.workdir / "simulator.log"),
        http_server(web_cmd, web_port, env, svc.workdir / "receiver.log"),
    ):
        worker = WorkerProcess(svc.workdir, f"reach-{mode}", {**env, "LOG_LEVEL": "INFO"})
        try:
            yield Stack(svc, web_url, sim_url)
        finally:
            worker.stop()


def load(url: str, people: list[pop.Person], tag: str) -> None:
    """Contacts by COPY, each `active` with the network of its last report, as after earlier cycles."""
    engine = create_engine(url)
    now = datetime.now(UTC)
    with engine.begin() as connection:
        cursor = connection.connection.driver_connection.cursor()
        columns = "phone, name, status, last_network_code, tags, created_at, updated_at"
        with cursor.copy(f"COPY contacts ({columns}) FROM STDIN") as cp:
            for i, person in enumerate(people):
                cp.write_row((person.phone, f"Customer {i}", "active", person.network.code, [tag], now, now))
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        connection.execute(text("VACUUM ANALYZE contacts"))
    engine.dispose()


def wait_until(what: str, done: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not within {timeout:.0f} s")
        time.sleep(0.5)


def settled(run: Stack, cycle_ids: list[int]) -> bool:
    ids = ",".join(map(str, cycle_ids))
    open_cycles = run.scalar(f"SELECT count(*) FROM cycles WHERE id IN ({ids}) AND state <> 'done'")
    return open_cycles == 0 and run.quiet()


def warm_up(run: Stack, size: str) -> dict[str, int]:
    """A cycle to other contacts of the same networks (no calls): what `auto` learns each network's P95 from.
    Returns each network's wait once housekeeping has refreshed the figures."""
    people = pop.population(WARMUP_PER_NETWORK[size] * len(pop.NETWORKS), SEED + 1, first_index=5000, even=True)
    load(run.svc.database_url, people, WARMUP)
    cycle_id = run.start_cycle(WARMUP, "next_cycle")
    wait_until("warm-up cycle settled", lambda: settled(run, [cycle_id]), 600)
    codes = {n.code for n in pop.NETWORKS}

    def learned() -> bool:
        rows = run.scalar(f"SELECT count(*) FROM network_report_delays WHERE samples >= {report_delays.MIN_SAMPLE}")
        return int(rows or 0) >= len(codes) + 1  # every network and the pooled figure

    wait_until("figures refreshed", learned, 60)
    engine = create_engine(run.svc.database_url)
    with engine.connect() as connection:
        rows = connection.execute(text("SELECT network_code, p95_seconds FROM network_report_delays")).all()
    engine.dispose()
    return {code: p95 for code, p95 in rows}


# -- one mode ------------------------------------------------------------------------------------------------------


@dataclass
class Outcome:
    mode: str
    audience: int
    #: Seconds from the first cycle's start to each reached contact's first proof, by phone.
    reached: dict[str, float]
    sms_cost: Decimal
    call_cost: Decimal
    calls: int
    calls_to_delivered: int
    next_round_sms: int
    learned: dict[str, float]
    wall: float
    #: Seconds from AT's acceptance to the `Success` as Reach recorded it, by phone (the simulator's delay plus
    #: what the simulator, the receiver and the worker added).
    report_seconds: dict[str, float]
    #: Seconds from the first cycle's start to its last SMS handed to AT, and to the second cycle's start.
    sent_in: float = float("nan")
    second_after: float = float("nan")


def run_mode(mode: str, size: str, people: list[pop.Person]) -> Outcome:
    with services(f"ttr_{mode}") as svc, stack(svc, mode, size) as run:
        load(svc.database_url, people, AUDIENCE)
        learned = warm_up(run, size) if mode == "auto" else {}
        started = time.monotonic()
        first = run.start_cycle(AUDIENCE, "next_cycle" if mode == "next_cycle" else "same_cycle")
        cycle_ids = [first]
        if mode == "next_cycle":
            wait_until("first cycle sent", lambda: run.scalar(f"SELECT state FROM cycles WHERE id = {first}") == "done",
                       INTERVAL + 600)  # fmt: skip
            # Its reports are all scheduled by now; the next round's SMS are not what is measured, so the
            # simulator posts none for them (less load on the one thread that also posts the calls' callbacks).
            run.set_scenario(pop.silent_scenario(SEED))
            time.sleep(max(0.0, started + INTERVAL - time.monotonic()))
            cycle_ids.append(run.start_cycle(AUDIENCE, "next_cycle"))
        wait_until("cycles settled", lambda: settled(run, cycle_ids), 3600)
        wall = time.monotonic() - started
        return measure(svc, mode, len(people), cycle_ids, learned, wall)


def measure(svc: Services, mode: str, audience: int, cycle_ids: list[int], learned: dict, wall: float) -> Outcome:
    first, run_ids = cycle_ids[0], ",".join(map(str, cycle_ids))
    engine = create_engine(svc.database_url)
    with engine.connect() as connection:
        start = connection.scalar(text(f"SELECT created_at FROM cycles WHERE id = {first}"))
        delivered = connection.execute(
            text(
                "SELECT phone, min(status_at), min(coalesce(claimed_at, created_at)) FROM messages "
                f"WHERE cycle_id = {first} AND status = 'Success' GROUP BY phone"
            )
        ).all()
        pressed = connection.execute(
            text(
                "SELECT c.phone, min(e.received_at) FROM calls c JOIN call_events e ON e.session_id = c.session_id "
                f"WHERE c.cycle_id IN ({run_ids}) AND e.dtmf_digits = '1' GROUP BY c.phone"
            )
        ).all()
        sms_cost = connection.scalar(text(f"SELECT coalesce(sum(cost), 0) FROM messages WHERE cycle_id = {first}"))
        call_cost, calls = connection.execute(
            text(f"SELECT coalesce(sum(amount), 0), count(*) FROM calls WHERE cycle_id IN ({run_ids})")
        ).one()
        calls_to_delivered = connection.scalar(
            text(
                f"SELECT count(*) FROM calls c WHERE c.cycle_id IN ({run_ids}) AND EXISTS (SELECT 1 FROM messages m "
                f"WHERE m.cycle_id = {first} AND m.phone = c.phone AND m.status = 'Success')"
            )
        )
        sent_in, second_after = connection.execute(
            text(
                "SELECT extract(epoch FROM max(coalesce(m.claimed_at, m.created_at)) - c.created_at), "
                f"(SELECT extract(epoch FROM min(n.created_at) - c.created_at) FROM cycles n WHERE n.id IN ({run_ids}) "
                f"AND n.id <> {first}) FROM messages m JOIN cycles c ON c.id = m.cycle_id WHERE c.id = {first} "
                "GROUP BY c.created_at"
            )
        ).one()
        next_round = connection.scalar(
            text(f"SELECT count(*) FROM messages WHERE cycle_id IN ({run_ids}) AND cycle_id <> {first}")
        )
    engine.dispose()
    reached: dict[str, float] = {}
    lag = {phone: (at - sent).total_seconds() for phone, at, sent in delivered}
    for phone, at in [*((phone, at) for phone, at, _ in delivered), *pressed]:
        seconds = (at - start).total_seconds()
        reached[phone] = min(reached.get(phone, seconds), seconds)
    return Outcome(mode, audience, reached, Decimal(sms_cost), Decimal(call_cost), int(calls),
                   int(calls_to_delivered or 0), int(next_round or 0), learned, wall, lag,
                   float(sent_in), float("nan") if second_after is None else float(second_after))  # fmt: skip


# -- the report ----------------------------------------------------------------------------------------------------


def percentile(values: list[float], fraction: float, population: int | None = None) -> float:
    """Nearest rank over `values`, or over `population` contacts of which the unreached never are (NaN when the
    rank falls among them)."""
    ordered = sorted(values)
    rank = max(1, math.ceil(fraction * (population or len(ordered))))
    return ordered[rank - 1] if rank <= len(ordered) else float("nan")


def minutes(bench_seconds: float) -> float:
    """Real minutes a span of benchmark seconds stands for."""
    return bench_seconds * pop.SCALE / 60


def cost_per_reached(o: Outcome) -> Decimal:
    return (o.sms_cost + o.call_cost) / len(o.reached) if o.reached else Decimal("NaN")


def mode_row(o: Outcome, base: Outcome) -> list[object]:
    times, base_times = list(o.reached.values()), list(base.reached.values())
    p50, p95 = percentile(times, 0.5), percentile(times, 0.95)
    return [
        o.mode, f"{len(times):,} / {o.audience:,}", minutes(p50), minutes(p95),
        minutes(percentile(times, 0.5, o.audience)), minutes(percentile(times, 0.95, o.audience)),
        f"{p50 / percentile(base_times, 0.5):.2f}x", f"{p95 / percentile(base_times, 0.95):.2f}x",
        f"{len(times) / max(1, len(base_times)):.3f}x", f"{o.calls:,} ({o.calls_to_delivered:,})",
        f"{o.sms_cost:.2f} + {o.call_cost:.2f}", f"{cost_per_reached(o):.3f}",
        f"{cost_per_reached(o) / cost_per_reached(base):.2f}x", f"{o.wall:.0f}",
    ]  # fmt: skip


def report(outcomes: list[Outcome], people: list[pop.Person]) -> None:
    table(
        ["mode", "reached", "P50 min", "P95 min", "P50 all", "P95 all", "P50 vs base", "P95 vs base", "reached vs",
         "calls (to delivered)", "KES SMS + calls", "KES / reached", "cost vs", "run s"],
        [mode_row(o, outcomes[0]) for o in outcomes],
    )  # fmt: skip
    print("P50/P95 min: over the contacts reached, in real minutes (benchmark seconds x SCALE / 60); `all`: over the "
          "whole audience, the unreached never reached (`-`: the rank falls among them). `calls (to delivered)`: "
          "calls placed, and of them calls to contacts whose SMS was delivered too.\n")  # fmt: skip
    by_network(outcomes, people)
    report_lag(outcomes, people)


def report_lag(outcomes: list[Outcome], people: list[pop.Person]) -> None:
    """What the simulator (one thread posts every callback), the receiver and the worker added to each report's
    delay: a second of it stands for a real minute here, so it is shown beside the results."""
    delay_of = {p.phone: p.network.delay(p.bucket) for p in people}
    rows = []
    for o in outcomes:
        lags = [seconds - delay_of[phone] for phone, seconds in o.report_seconds.items() if phone in delay_of]
        if lags:
            rows.append([o.mode, len(lags), percentile(lags, 0.5), percentile(lags, 0.95), max(lags)])
    table(["mode", "Success reports", "added lag P50 s (bench)", "P95 s", "max s"], rows)


def by_network(outcomes: list[Outcome], people: list[pop.Person]) -> None:
    network_of = {p.phone: p.network for p in people}
    learned = next((o.learned for o in outcomes if o.learned), {})
    rows = []
    for network in pop.NETWORKS:
        members = sum(1 for p in people if p.network is network)
        row: list[object] = [network.name, f"{network.median:.0f} / {network.p95:.0f} s",
                             f"{network.failed:.0%} / {network.silent:.0%}", members]  # fmt: skip
        for o in outcomes:
            times = [t for phone, t in o.reached.items() if network_of.get(phone) is network]
            row.append(f"{percentile(times, 0.95) * pop.SCALE / 60:.1f}" if times else "-")
        p95 = learned.get(network.code)
        wait = min(max(WAITS["min"], -(-p95 // 1)), WAITS["max"]) if p95 is not None else float("nan")
        row.append(f"{p95 * pop.SCALE:.0f} s → {wait * pop.SCALE:.0f} s" if p95 is not None else "-")
        rows.append(row)
    table(["network", "report delay P50 / P95 (real)", "failed / no report", "contacts",
           *(f"P95 min {o.mode}" for o in outcomes), "auto: learned P95 → wait (real)"], rows)  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = size_parser(__doc__.splitlines()[0])
    parser.add_argument("--modes", default=",".join(MODES), help="comma-separated, the first is the baseline")
    args = parser.parse_args(argv)
    # A run stopped with SIGTERM (timeout, kill) still stops its processes and drops its databases.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    modes = [m for m in args.modes.split(",") if m]
    if not modes or any(m not in MODES for m in modes):
        parser.error(f"--modes: from {', '.join(MODES)}")
    header("Time to reach: next_cycle, a fixed fallback wait and auto", ["-m", "bench.time_to_reach",
           *(argv or sys.argv[1:])])  # fmt: skip
    people = pop.population(SIZES[args.size], SEED)
    print(f"{len(people):,} contacts on {len(pop.NETWORKS)} networks, seed {SEED}; time scaled 1/{pop.SCALE} (one "
          f"benchmark second = one real minute): FALLBACK_AFTER_SECONDS {FIXED_WAIT} s → {WAITS['fixed']} s, auto "
          f"within {WAITS['min']}..{WAITS['max']} s, the next cycle {NEXT_CYCLE_SECONDS} s → {INTERVAL:.0f} s after "
          f"the first, CALL_RETRY_DELAY_SECONDS 600 → 10 s, HOUSEKEEPING_SECONDS 1 (= 60 s real; default 15 s), "
          f"SEND_RATE_PER_SECOND {SEND_RATE[args.size]} (not scaled), MAX_CALLS_IN_FLIGHT {MAX_CALLS_IN_FLIGHT}, "
          f"CALL_RETRIES 2, calls' callbacks {pop.CALL_STEP_SECONDS} s real apart\n", flush=True)  # fmt: skip
    outcomes = []
    for mode in modes:
        outcome = run_mode(mode, args.size, people)
        second = (
            f", the second cycle started {outcome.second_after:.0f} s after the first" if mode == "next_cycle" else ""
        )
        print(f"{mode}: {len(outcome.reached):,} reached, {outcome.calls:,} calls, the first cycle's SMS all handed to "
              f"AT {outcome.sent_in:.0f} s after its start{second}; {outcome.wall:.0f} s ({load_note()})",
              flush=True)  # fmt: skip
        outcomes.append(outcome)
    print()
    report(outcomes, people)
    if any(o.next_round_sms for o in outcomes):
        print(f"next_cycle's second cycle also texted {outcomes[0].next_round_sms:,} contacts already reached (the "
              "next round's message): neither their cost nor their reports are counted.")  # fmt: skip
    print(load_note())
    return 0


if __name__ == "__main__":
    sys.exit(main())
