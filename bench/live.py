"""Live answers: p50/p99 of the `isActive=1` voice callback and of USSD steps, idle and under DLR load.

The real receiver runs under gunicorn with a real worker draining the inbox into Postgres. Each probe is
one wrk connection sending requests back to back (`wrk -c1 --latency`); the load is a second wrk posting
unique DLRs at a capped rate (per-connection delay). Baseline in the same run: `GET /healthz` (no Redis,
no Postgres) measured the same way, idle and under the same load.

    python -m bench.live --size full [--server gevent-w2] [--dlr-rate 1000]
"""

from __future__ import annotations

import subprocess
import sys
import time
from datetime import UTC, datetime

from sqlalchemy import create_engine

from bench.common import (
    WEBHOOK_TOKEN,
    Services,
    free_port,
    header,
    http_server,
    load_note,
    parse_wrk,
    run_wrk,
    services,
    size_parser,
    table,
    wrk_command,
)
from bench.receiver import SERVERS
from shared import voice_script
from tests.services import WorkerProcess

SECONDS = {"tiny": 1, "small": 3, "full": 10}
DLR_RATE = {"tiny": 200, "small": 500, "full": 1000}
LOAD_CONNECTIONS = 8
PHONES = 1000
GOAL_MS = 20.0

PROBES = {
    "GET /healthz (baseline)": ("get.lua", "/healthz", {}),
    "voice isActive=1": ("voice.lua", "", {"token": WEBHOOK_TOKEN, "sessions": PHONES}),
    "USSD menu": ("ussd.lua", "", {"token": WEBHOOK_TOKEN, "text": "", "phones": PHONES}),
    "USSD my status (Postgres)": ("ussd.lua", "", {"token": WEBHOOK_TOKEN, "text": "1", "phones": PHONES}),
}


def seed(svc: Services) -> None:
    """Contacts for the status screen and a script in Redis for every voice session the probe uses."""
    engine = create_engine(svc.database_url)
    now = datetime.now(UTC)
    with engine.begin() as connection:
        cursor = connection.connection.driver_connection.cursor()
        with cursor.copy("COPY contacts (phone, status, created_at, updated_at) FROM STDIN") as cp:
            for i in range(PHONES):
                cp.write_row((f"+2547{i:08d}", "active", now, now))
    engine.dispose()
    for i in range(PHONES):
        voice_script.remember(
            svc.redis, "Hello from the benchmark", phone=f"+2547{i:08d}", session_id=f"ATVId_bench_{i}"
        )


def probe_all(url: str, seconds: float) -> dict[str, object]:
    results = {}
    for name, (script, path, options) in PROBES.items():
        results[name] = run_wrk(url + path, script, connections=1, seconds=seconds, **options)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = size_parser(__doc__.splitlines()[0])
    parser.add_argument("--server", default="gevent-w2", choices=list(SERVERS))
    parser.add_argument("--dlr-rate", type=int, help="DLRs per second offered as load (default by size)")
    args = parser.parse_args(argv)
    seconds, rate = SECONDS[args.size], args.dlr_rate or DLR_RATE[args.size]
    header("Live answers: voice and USSD latency under DLR load", ["-m", "bench.live", *(argv or sys.argv[1:])])
    with services("live") as svc:
        seed(svc)
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        command = SERVERS[args.server].command("web:create_app()", port)
        worker = WorkerProcess(svc.workdir, "live", svc.env(log_level="INFO"))
        try:
            with http_server(command, port, svc.env(), svc.workdir / "receiver.log"):
                run_wrk(url, "voice.lua", connections=2, seconds=1, token=WEBHOOK_TOKEN)  # warm up
                idle = probe_all(url, seconds)
                delay_ms = LOAD_CONNECTIONS * 1000 / rate
                load_seconds = seconds * len(PROBES) + 2
                load_cmd = wrk_command(url, "dlr.lua", connections=LOAD_CONNECTIONS, seconds=load_seconds)
                env = {"WRK_TOKEN": WEBHOOK_TOKEN, "WRK_DELAY_MS": f"{delay_ms:.1f}"}
                load = subprocess.Popen(load_cmd, env=env, stdout=subprocess.PIPE, text=True)
                time.sleep(1)
                loaded = probe_all(url, seconds)
                load_out, _ = load.communicate(timeout=load_seconds + 60)
                load_result = parse_wrk(load_out)
        finally:
            worker.stop()
    print(f"receiver: {args.server}; worker prefork -c 2 draining the inbox; probes: wrk -t1 -c1 -d{seconds}s each; "
          f"load: wrk -c{LOAD_CONNECTIONS} posting DLRs, offered {rate:,}/s, achieved {load_result.rate:,.0f}/s "
          f"(p99 {load_result.p99_ms:.1f} ms, errors {load_result.non_2xx + load_result.socket_errors})\n")  # fmt: skip
    base_idle, base_loaded = idle["GET /healthz (baseline)"], loaded["GET /healthz (baseline)"]
    rows = []
    for name in PROBES:
        i, lo = idle[name], loaded[name]
        goal = "-" if name.startswith("GET") else f"< {GOAL_MS:.0f} ms: {'met' if lo.p99_ms < GOAL_MS else 'NOT met'}"
        rows.append([name, i.rate, i.p50_ms, i.p99_ms, lo.rate, lo.p50_ms, lo.p99_ms,
                     f"{lo.p99_ms / base_loaded.p99_ms:.1f}x", lo.non_2xx + lo.socket_errors, goal])  # fmt: skip
    table(
        ["request", "idle req/s", "idle p50 ms", "idle p99 ms", "loaded req/s", "loaded p50 ms", "loaded p99 ms",
         "p99 vs baseline", "errors", "goal (loaded p99)"],
        rows,
    )  # fmt: skip
    print(f"baseline idle p99 {base_idle.p99_ms:.2f} ms")
    print(load_note())
    return 0


if __name__ == "__main__":
    sys.exit(main())
