"""A cycle end to end: `POST /api/cycles` until every SMS's delivery report is applied, memory against size.

Loads N contacts (COPY), all `active` (each gets one SMS), and runs the whole system as production does: the
receiver (`python -m web.serve` as reach_cli/processes.py writes it), the worker (`celery -A worker worker
--beat`) and `python -m simulator`, whose scenario gives every message one delivery report (`Success`), posted to the
receiver's `/dlr`. The run starts with `POST /api/cycles` (operator token) and ends when every message
holds its final report in Postgres. Phases: plan (cycle out of `planning`), dispatch (every SMS sent), last
report applied. Peak memory (PSS, psutil) of the worker tree, the receiver tree and the simulator.

Memory must not grow with the contact count: `--size full` runs 100k and then 1M in one run and reports the
ratio of their peaks. Baseline in the same run: the simulator posting reports to a trivial WSGI app on the
gunicorn gevent server (`bench/trivial_app.py`), its own ceiling, so the ratio shows whether it is the limit.
SEND_RATE_PER_SECOND and the callback rate limit are raised so neither is the limit.

    python -m bench.cycle_e2e --size full                  # 100,000 then 1,000,000 contacts
    python -m bench.cycle_e2e --sizes 100000,300000        # any sizes, in order
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import requests
from sqlalchemy import Engine, create_engine, text

from bench.common import (
    API_TOKEN,
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
from reach_cli import processes
from tests.services import WorkerProcess

SIZES = {"tiny": [500], "small": [100_000], "full": [100_000, 1_000_000]}
#: Reports the simulator posts to the trivial app for its ceiling (the baseline), by --size.
BASELINE_REPORTS = {"tiny": 500, "small": 20_000, "full": 50_000}
SEND_RATE = 10_000
#: One report per message, so each contact gets one SMS and one report.
SCENARIO = {"default": {"dlr": ["Success"]}}
#: Seconds between two looks at Postgres (a count over `messages`), between two progress lines, and the
#: longest a size may take.
POLL_SECONDS = 2.0
PROGRESS_SECONDS = 60.0
TIMEOUT_SECONDS = 4 * 3600
DONE_SQL = (
    "SELECT count(*) FILTER (WHERE send_state = 'sent'), count(*) FILTER (WHERE status = 'Success') "
    "FROM messages WHERE cycle_id = :id"
)


@dataclass
class Run:
    """What one size measured; times in seconds from `POST /api/cycles`."""

    contacts: int
    load_seconds: float = 0.0
    planned: float = float("nan")
    dispatched: float = float("nan")
    applied: float = float("nan")
    sent: int = 0
    delivered: int = 0
    worker_pss: int = 0
    worker_rss_single: int = 0
    receiver_pss: int = 0
    simulator_pss: int = 0
    simulator: dict = field(default_factory=dict)
    #: Worker tree PSS (MB) when a quarter, half, three quarters and all of the reports were applied.
    worker_pss_by_progress: list[float] = field(default_factory=list)
    load_start: str = ""
    load_end: str = ""


def load_contacts(url: str, n: int) -> None:
    engine = create_engine(url)
    now = datetime.now(UTC)
    with engine.begin() as connection:
        cursor = connection.connection.driver_connection.cursor()
        with cursor.copy("COPY contacts (phone, name, status, created_at, updated_at) FROM STDIN") as cp:
            for i in range(n):
                cp.write_row((f"+2547{i:08d}", f"Customer {i}", "active", now, now))
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        connection.execute(text("VACUUM ANALYZE contacts"))
    engine.dispose()


def loadavg() -> str:
    import os

    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def simulator_command(port: int, receiver_url: str, scenario: Path, senders: int) -> list[str]:
    return [
        str(BIN / "python"), "-m", "simulator", "--port", str(port), "--callback-url", receiver_url,
        "--scenario", str(scenario), "--senders", str(senders),
    ]  # fmt: skip


def system_env(svc: Services, sim_url: str) -> dict[str, str]:
    return svc.env(
        at_sms_url=f"{sim_url}/version1",
        at_voice_url=sim_url,
        send_rate_per_second=SEND_RATE,
        rate_limit_callbacks="1000000/second",
    )


def sim_stats(sim_url: str) -> dict:
    return requests.get(f"{sim_url}/_sim/stats", timeout=10).json()


def start_cycle(receiver_url: str) -> int:
    answer = requests.post(
        f"{receiver_url}/api/cycles",
        json={"message": "Hello from the benchmark"},
        headers={"Authorization": f"Bearer {API_TOKEN}"},
        timeout=30,
    )
    answer.raise_for_status()
    return int(answer.json()["id"])


def progress(run: Run, now: float, memory: dict[str, TreeRss]) -> None:
    """One line on a long run: how far it got, and each tree's memory now and at its peak."""
    trees = ", ".join(
        f"{name} {rss.last_pss / 2**20:.0f} (peak {rss.peak_pss / 2**20:.0f})" for name, rss in memory.items()
    )
    print(f"  {now:6.0f} s: {run.sent:,} sent, {run.delivered:,} reports applied; PSS MB {trees}; load {loadavg()}",
          flush=True)  # fmt: skip


def watch(run: Run, engine: Engine, cycle_id: int, start: float, memory: dict[str, TreeRss]) -> None:
    """Poll Postgres until every contact's report is applied; note when each phase ended."""
    marks = [run.contacts * q // 4 for q in (1, 2, 3, 4)]
    shown = 0.0
    while time.monotonic() - start < TIMEOUT_SECONDS:
        time.sleep(POLL_SECONDS)
        with engine.connect() as connection:
            state = connection.scalar(text("SELECT state FROM cycles WHERE id = :id"), {"id": cycle_id})
            sent, delivered = connection.execute(text(DONE_SQL), {"id": cycle_id}).one()
        now = time.monotonic() - start
        if state != "planning" and run.planned != run.planned:
            run.planned = now
        if sent >= run.contacts and run.dispatched != run.dispatched:
            run.dispatched = now
        while marks and delivered >= marks[0]:
            marks.pop(0)
            run.worker_pss_by_progress.append(memory["worker"].peak_pss / 2**20)
        run.sent, run.delivered = sent, delivered
        if now - shown >= PROGRESS_SECONDS:
            shown = now
            progress(run, now, memory)
        if delivered >= run.contacts:
            run.applied = now
            return
    raise RuntimeError(f"timed out: {run.sent:,} sent, {run.delivered:,} of {run.contacts:,} reports applied")


def run_size(n: int, senders: int) -> Run:
    run = Run(contacts=n, load_start=loadavg())
    with services("e2e") as svc:
        started = time.monotonic()
        load_contacts(svc.database_url, n)
        run.load_seconds = time.monotonic() - started
        receiver_port, sim_port = free_port(), free_port()
        receiver_url, sim_url = f"http://127.0.0.1:{receiver_port}", f"http://127.0.0.1:{sim_port}"
        env = system_env(svc, sim_url)
        scenario = svc.workdir / "scenario.json"
        scenario.write_text(json.dumps(SCENARIO))
        receiver_cmd = [str(BIN / "python"), "-m", *processes.receiver(f"127.0.0.1:{receiver_port}")]
        sim_cmd = simulator_command(sim_port, receiver_url, scenario, senders)
        engine = create_engine(svc.database_url)
        with (
            http_server(receiver_cmd, receiver_port, env, svc.workdir / "receiver.log") as receiver,
            http_server(sim_cmd, sim_port, env, svc.workdir / "simulator.log") as simulator,
        ):
            worker = WorkerProcess(svc.workdir, "e2e", {**env, "LOG_LEVEL": "INFO"})  # it waits for "ready."
            try:
                with (
                    TreeRss(worker.process.pid, interval=0.5) as worker_rss,
                    TreeRss(receiver.pid, interval=0.5) as receiver_rss,
                    TreeRss(simulator.pid, interval=0.5) as simulator_rss,
                ):
                    start = time.monotonic()
                    cycle_id = start_cycle(receiver_url)
                    memory = {"worker": worker_rss, "receiver": receiver_rss, "simulator": simulator_rss}
                    watch(run, engine, cycle_id, start, memory)
                run.simulator = sim_stats(sim_url)
            finally:
                worker.stop()
                engine.dispose()
    run.worker_pss, run.worker_rss_single = worker_rss.peak_pss, worker_rss.peak_single
    run.receiver_pss, run.simulator_pss = receiver_rss.peak_pss, simulator_rss.peak_pss
    run.load_end = loadavg()
    return run


def simulator_ceiling(reports: int, senders: int) -> float:
    """Reports per second the simulator posts to a trivial app (no Redis, no Postgres) on the same gunicorn."""
    with services("e2e_base") as svc:
        app_port, sim_port = free_port(), free_port()
        app_url, sim_url = f"http://127.0.0.1:{app_port}", f"http://127.0.0.1:{sim_port}"
        scenario = svc.workdir / "scenario.json"
        scenario.write_text(json.dumps(SCENARIO))
        app_cmd = [
            str(BIN / "gunicorn"), "--bind", f"127.0.0.1:{app_port}", "--workers", "2", "--worker-class", "gevent",
            "--log-level", "warning", "bench.trivial_app:app",
        ]  # fmt: skip
        sim_cmd = simulator_command(sim_port, app_url, scenario, senders)
        with (
            http_server(app_cmd, app_port, svc.env(), svc.workdir / "trivial.log"),
            http_server(sim_cmd, sim_port, svc.env(), svc.workdir / "simulator.log"),
        ):
            from shared.at_client import get_at_client

            with use_services_here(svc, at_sms_url=f"{sim_url}/version1", at_voice_url=sim_url):
                client, batch = get_at_client(), 100
                start = time.monotonic()
                for i in range(0, reports, batch):
                    client.send_sms("baseline", [f"+2541{k:08d}" for k in range(i, min(i + batch, reports))])
            while sim_stats(sim_url)["done"] < reports:
                if time.monotonic() - start > 600:
                    raise RuntimeError("the simulator did not post its reports within 600 s")
                time.sleep(0.2)
            return reports / (time.monotonic() - start)


def report(runs: list[Run], ceiling: float, senders: int) -> None:
    mb = 2**20
    table(
        ["contacts", "load avg start / end", "plan s", "dispatch s", "last report s", "SMS/s", "reports applied/s",
         "vs simulator ceiling", "sends held by the simulator s"],
        [[r.contacts, f"{r.load_start} / {r.load_end}", r.planned, r.dispatched, r.applied, r.contacts / r.dispatched,
          r.contacts / r.applied, f"{r.contacts / r.applied / ceiling:.0%}", r.simulator.get("room_wait_seconds", "-")]
         for r in runs],
    )  # fmt: skip
    table(
        ["contacts", "worker tree PSS MB", "largest worker process RSS MB", "receiver tree PSS MB",
         "simulator PSS MB", "worker PSS at 1/4, 1/2, 3/4, all reports"],
        [[r.contacts, r.worker_pss / mb, r.worker_rss_single / mb, r.receiver_pss / mb, r.simulator_pss / mb,
          " / ".join(f"{x:.0f}" for x in r.worker_pss_by_progress)] for r in runs],
    )  # fmt: skip
    print(f"baseline: the simulator ({senders} senders) posts {ceiling:,.0f} reports/s to a trivial app on gunicorn "
          f"gevent -w 2 (same run); contacts loaded by COPY in "
          + ", ".join(f"{r.load_seconds:.0f} s ({r.contacts:,})" for r in runs))  # fmt: skip
    if len(runs) > 1:
        small, large = runs[0], runs[-1]
        scale = large.contacts / small.contacts
        ratios = {
            "worker PSS": large.worker_pss / small.worker_pss,
            "receiver PSS": large.receiver_pss / small.receiver_pss,
            "simulator PSS": large.simulator_pss / small.simulator_pss,
            "time": large.applied / small.applied,
        }
        shown = ", ".join(f"{name} {ratio:.2f}x" for name, ratio in ratios.items())
        print(f"{large.contacts:,} against {small.contacts:,} contacts ({scale:.0f}x the contacts): {shown}")
    print(load_note())


def main(argv: list[str] | None = None) -> int:
    parser = size_parser(__doc__.splitlines()[0])
    parser.add_argument("--sizes", help="comma-separated contact counts, run in order (instead of --size's)")
    parser.add_argument("--senders", type=int, default=4, help="the simulator's callback senders (default 4)")
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")] if args.sizes else SIZES[args.size]
    header(
        "A cycle end to end: POST /api/cycles to the last report applied",
        ["-m", "bench.cycle_e2e", *(argv or sys.argv[1:])],
    )
    print(f"sizes {', '.join(f'{n:,}' for n in sizes)}; all contacts active (one SMS, one report each); receiver "
          f"{' '.join(processes.receiver('ADDR'))}; worker prefork -c 2 with beat; SEND_RATE_PER_SECOND {SEND_RATE:,}, "
          f"callback rate limit 1,000,000/s; simulator --senders {args.senders}\n", flush=True)  # fmt: skip
    ceiling = simulator_ceiling(BASELINE_REPORTS.get(args.size, 50_000), args.senders)
    runs = []
    for n in sizes:
        print(f"{n:,} contacts:", flush=True)
        runs.append(run_size(n, args.senders))
        print(f"{n:,} contacts: every report applied {runs[-1].applied:.0f} s after POST /api/cycles\n", flush=True)
        report(runs, ceiling, args.senders)  # so far: a long run cut short still shows its finished sizes
    return 0


if __name__ == "__main__":
    sys.exit(main())
