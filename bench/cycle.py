"""Cycle at scale: planning N contacts in a mixed state, then dispatching SMS to the AT simulator.

Loads N contacts (COPY), starts a cycle and lets a real worker (`celery -A worker worker --beat`, prefork
2) plan it (one INSERT ... SELECT) and dispatch it to `python -m simulator` on loopback (no callbacks, so
only sending is measured). SEND_RATE_PER_SECOND is raised so the rate limiter is not the limit. Full
dispatch of 1M is too long here: SMS are counted over a fixed window after planning. Baselines in the same
run: the same rows copied by a bare INSERT ... SELECT into an unindexed table, and the simulator's
own rate for the same batches sent by a plain loop over the AT client.

    python -m bench.cycle --size full      # 1,000,000 contacts, 60 s of dispatch
"""

from __future__ import annotations

import re
import sys
import time
from datetime import UTC, datetime

from sqlalchemy import create_engine, text

from bench.common import (
    BIN,
    Services,
    TreeRss,
    free_port,
    header,
    http_server,
    load_note,
    services,
    size_parser,
    table,
    use_services_here,
)
from shared.broker import make_celery
from shared.settings import load_settings
from tests.services import WorkerProcess

SIZES = {"tiny": 5_000, "small": 100_000, "full": 1_000_000}
WINDOW = {"tiny": 3, "small": 15, "full": 60}
SEND_RATE = 10_000
#: Contact states by i % 20: 40% new, 25% active, 15% inactive, 10% pending, 5% opted out, 5% invalid.
STATES = ["new"] * 8 + ["active"] * 5 + ["inactive"] * 3 + ["pending"] * 2 + ["opted_out", "invalid"]


def load_contacts(url: str, n: int) -> None:
    engine = create_engine(url)
    now = datetime.now(UTC)
    with engine.begin() as connection:
        cursor = connection.connection.driver_connection.cursor()
        with cursor.copy(
            "COPY contacts (phone, name, status, channel_preference, created_at, updated_at) FROM STDIN"
        ) as cp:
            for i in range(n):
                preference = "voice" if i % 50 == 1 else "sms" if i % 50 == 2 else None
                cp.write_row((f"+2547{i:08d}", f"Customer {i}", STATES[i % 20], preference, now, now))
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        connection.execute(text("VACUUM ANALYZE contacts"))
    engine.dispose()


def baseline_copy(url: str) -> float:
    """The same reachable contacts copied by a bare INSERT ... SELECT into an unindexed, unlogged table."""
    engine = create_engine(url)
    with engine.begin() as connection:
        connection.execute(
            text("CREATE UNLOGGED TABLE plan_baseline (cycle_id bigint, contact_id bigint, channel text)")
        )
        start = time.monotonic()
        connection.execute(
            text(
                "INSERT INTO plan_baseline SELECT 0, id, CASE WHEN status IN ('inactive', 'pending') THEN 'voice'"
                " ELSE 'sms' END FROM contacts WHERE status NOT IN ('opted_out', 'invalid')"
            )
        )
        elapsed = time.monotonic() - start
        connection.execute(text("DROP TABLE plan_baseline"))
    engine.dispose()
    return elapsed


def simulator_rate(svc: Services, sim_url: str, batch: int, seconds: float) -> float:
    """Recipients per second the simulator takes from a plain loop over Reach's AT client (no database)."""
    from shared.at_client import get_at_client

    with use_services_here(svc, at_sms_url=f"{sim_url}/version1", at_voice_url=sim_url):
        client = get_at_client()
        sent, start, i = 0, time.monotonic(), 0
        while time.monotonic() - start < seconds:
            numbers = [f"+2541{(i * batch + k) % 10**8:08d}" for k in range(batch)]
            sent += len(client.send_sms("baseline", numbers).recipients)
            i += 1
        return sent / (time.monotonic() - start)


def count(url: str, sql: str) -> int:
    engine = create_engine(url)
    with engine.connect() as connection:
        value = connection.scalar(text(sql))
    engine.dispose()
    return int(value or 0)


def sizes(url: str) -> dict[str, int]:
    engine = create_engine(url)
    with engine.connect() as connection:
        result = {
            table_name: int(connection.scalar(text(f"SELECT pg_total_relation_size('{table_name}')")))
            for table_name in ("contacts", "cycle_items", "messages", "calls")
        }
        result["database"] = int(connection.scalar(text("SELECT pg_database_size(current_database())")))
    engine.dispose()
    return result


def run_cycle(svc: Services, sim_url: str, n: int, window: float, batch: int) -> dict:
    env = svc.env(
        log_level="INFO",
        at_sms_url=f"{sim_url}/version1",
        at_voice_url=sim_url,
        send_rate_per_second=SEND_RATE,
        sms_batch_size=batch,
    )
    worker = WorkerProcess(svc.workdir, "cycle", env)
    engine = create_engine(svc.database_url)
    try:
        with TreeRss(worker.process.pid) as rss:
            with engine.begin() as connection:
                cycle_id = connection.scalar(
                    text("INSERT INTO cycles (state, message, created_at) VALUES ('planning', :m, now()) RETURNING id"),
                    {"m": "Hello from the benchmark"},
                )
            celery = make_celery("bench", load_settings(redis_url=svc.redis_url))
            start = time.monotonic()
            celery.send_task("reach.cycle.plan", args=[cycle_id])
            state = "planning"
            while state == "planning" and time.monotonic() - start < 600:
                time.sleep(0.2)
                with engine.connect() as connection:
                    state = connection.scalar(text("SELECT state FROM cycles WHERE id = :id"), {"id": cycle_id})
            planned = time.monotonic()
            sent_query = "SELECT count(*) FROM messages WHERE send_state = 'sent'"
            first = None
            while time.monotonic() - planned < window:
                time.sleep(0.5)
                if first is None and count(svc.database_url, sent_query):
                    first = time.monotonic() - planned
            sent = count(svc.database_url, sent_query)
            elapsed = time.monotonic() - planned
            calls = count(svc.database_url, "SELECT count(*) FROM calls")
    finally:
        worker.stop()
        engine.dispose()
    task_times = re.findall(r"reach\.cycle\.plan\[[^\]]+\] succeeded in ([\d.]+)s", worker.log())
    items = count(svc.database_url, "SELECT count(*) FROM cycle_items")
    return {
        "plan_wall": planned - start,
        "plan_task": float(task_times[0]) if task_times else float("nan"),
        "items": items,
        "sent": sent,
        "window": elapsed,
        "first_sms": first,
        "calls": calls,
        "rss_total": rss.peak_total,
        "rss_single": rss.peak_single,
        "pss_total": rss.peak_pss,
    }


def main(argv: list[str] | None = None) -> int:
    parser = size_parser(__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=load_settings().sms_batch_size, help="SMS_BATCH_SIZE")
    args = parser.parse_args(argv)
    n, window = SIZES[args.size], WINDOW[args.size]
    header("Cycle at scale: planning and SMS dispatch", ["-m", "bench.cycle", *(argv or sys.argv[1:])])
    with services("cycle") as svc:
        start = time.monotonic()
        load_contacts(svc.database_url, n)
        print(f"{n:,} contacts loaded by COPY in {time.monotonic() - start:.1f} s; SMS_BATCH_SIZE {args.batch}, "
              f"SEND_RATE_PER_SECOND {SEND_RATE:,}, worker prefork -c 2 with beat, dispatch window {window} s\n",
              flush=True)  # fmt: skip
        base_plan = baseline_copy(svc.database_url)
        port = free_port()
        sim_url = f"http://127.0.0.1:{port}"
        sim_cmd = [str(BIN / "python"), "-m", "simulator", "--port", str(port)]  # its key: AT_API_KEY in svc.env()
        with http_server(sim_cmd, port, svc.env(), svc.workdir / "simulator.log"):
            base_send = simulator_rate(svc, sim_url, args.batch, min(window, 10))
            result = run_cycle(svc, sim_url, n, window, args.batch)
        db = sizes(svc.database_url)
    rate = result["sent"] / result["window"]
    per_million = 1e6 / n / 2**20
    table(
        ["step", "what", "seconds", "rate /s", "baseline", "ratio", "goal"],
        [
            ["plan", f"{result['items']:,} items", result["plan_task"], result["items"] / result["plan_task"],
             f"bare INSERT…SELECT {base_plan:.2f} s", f"{base_plan / result['plan_task']:.0%}",
             f"< 15 s: {'met' if result['plan_task'] < 15 else 'NOT met'}"],
            ["dispatch SMS", f"{result['sent']:,} sent (sample)", result["window"], rate,
             f"AT client loop {base_send:,.0f}/s", f"{rate / base_send:.0%}", "-"],
        ],
    )  # fmt: skip
    first_sms = result["first_sms"] or float("nan")
    print(f"plan wall time (task sent → state dispatching): {result['plan_wall']:.2f} s; first SMS recorded "
          f"{first_sms:.1f} s after planning; calls placed: {result['calls']} (capped)\n")  # fmt: skip
    table(
        ["worker peak memory", "MB", "goal"],
        [
            ["process tree PSS (main, beat, 2 children; shared pages once)", result["pss_total"] / 2**20,
             f"< 300 MB: {'met' if result['pss_total'] < 300 * 2**20 else 'NOT met'}"],
            ["process tree RSS summed (shared pages counted per process)", result["rss_total"] / 2**20, "-"],
            ["largest single process", result["rss_single"] / 2**20, "-"],
        ],
    )  # fmt: skip
    table(
        ["table", "MB now", "MB per million contacts"],
        [[name, size / 2**20, size * per_million] for name, size in db.items()],
    )
    print("(messages/calls hold only the dispatched sample; cycle_items holds the whole plan)")
    print(load_note())
    return 0


if __name__ == "__main__":
    sys.exit(main())
