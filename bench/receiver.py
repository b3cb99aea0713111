"""Receiver: form-encoded DLRs accepted and queued per second, against a trivial WSGI handler.

For each server configuration, wrk posts unique DLRs on loopback to (a) `bench.trivial_app:app`, (b)
`bench.trivial_app:push_app` (a) plus one Redis LPUSH per request, and (c) the real `web:create_app()` on a
private Redis; the ratio (c)/(a) is the receiver's own cost. Every 200 must be on the Redis inbox afterwards
(checked: `queued`). CPU per request (server processes + Redis) is reported beside each rate.

    python -m bench.receiver --size full [--servers sync-w4,gevent-w2,production,granian-w2]

`production` is the receiver's own command line (reach_cli/processes.py: granian with Reach's async front, the
access log written; it serves Reach's app only, so its trivial baselines are gevent-w2's); the others are bare
gunicorn or granian (WSGI), no access log.
"""

from __future__ import annotations

import importlib.util
import sys
from dataclasses import dataclass

from bench.common import (
    BIN,
    WEBHOOK_TOKEN,
    Services,
    free_port,
    header,
    http_server,
    load_note,
    redis_cpu_seconds,
    run_wrk,
    services,
    size_parser,
    table,
    tree_cpu_seconds,
)
from reach_cli import processes
from shared.inbox import INBOX

SECONDS = {"tiny": 1, "small": 3, "full": 10}
WARMUP = {"tiny": 0, "small": 1, "full": 2}
CONNECTIONS = 32


@dataclass(frozen=True)
class Server:
    name: str
    needs: str | None  # a module that must be importable

    def command(self, target: str, port: int) -> list[str]:
        bind = f"127.0.0.1:{port}"
        gunicorn = [str(BIN / "gunicorn"), "--bind", bind, "--log-level", "warning"]
        factory = target.endswith("()")
        match self.name:
            case "sync-w4":
                return [*gunicorn, "-k", "sync", "-w", "4", target]
            case "sync-w2":
                return [*gunicorn, "-k", "sync", "-w", "2", target]
            case "gthread-w2-t4":
                return [*gunicorn, "-k", "gthread", "-w", "2", "--threads", "4", target]
            case "gthread-w2-t8":
                return [*gunicorn, "-k", "gthread", "-w", "2", "--threads", "8", target]
            case "gevent-w1":
                return [*gunicorn, "-k", "gevent", "-w", "1", "--worker-connections", "200", target]
            case "gevent-w2":
                return [*gunicorn, "-k", "gevent", "-w", "2", "--worker-connections", "200", target]
            case "production":  # `reach up`'s and compose's receiver command (Reach's app only), access log and all
                return [str(BIN / "python"), "-m", *processes.receiver(bind)]
            case "granian-w2":
                app = target.removesuffix("()")
                return [
                    str(BIN / "granian"), "--interface", "wsgi", "--host", "127.0.0.1", "--port", str(port),
                    "--workers", "2", "--log-level", "warning", "--no-ws", *(["--factory"] if factory else []), app,
                ]  # fmt: skip
        raise ValueError(self.name)


SERVERS = {
    s.name: s
    for s in [
        Server("sync-w4", None),
        Server("sync-w2", None),
        Server("gthread-w2-t4", None),
        Server("gthread-w2-t8", None),
        Server("gevent-w1", "gevent"),
        Server("gevent-w2", "gevent"),
        Server("production", "gevent"),
        Server("granian-w2", "granian"),
    ]
}
APPS = {"trivial": "bench.trivial_app:app", "push": "bench.trivial_app:push_app", "reach": "web:create_app()"}


def measure(svc: Services, server: Server, app: str, size: str) -> dict:
    port = free_port()
    log = svc.workdir / f"{server.name}-{app}.log"
    url = f"http://127.0.0.1:{port}"
    # The window is still counted per request, but wide enough that one load generator is never refused.
    env = svc.env(rate_limit_callbacks="1000000/second")
    with http_server(server.command(APPS[app], port), port, env, log) as process:
        if WARMUP[size]:
            run_wrk(url, "dlr.lua", connections=CONNECTIONS, seconds=WARMUP[size], token=WEBHOOK_TOKEN)
        svc.redis.delete(INBOX)
        cpu_before = tree_cpu_seconds(process.pid) + redis_cpu_seconds(svc.redis)
        result = run_wrk(url, "dlr.lua", connections=CONNECTIONS, seconds=SECONDS[size], token=WEBHOOK_TOKEN)
        cpu = tree_cpu_seconds(process.pid) + redis_cpu_seconds(svc.redis) - cpu_before
        queued = svc.redis.llen(INBOX) if app == "reach" else None
    # The server's and Redis's CPU per answered request: steadier than the rate on a shared machine, since
    # it does not count what other processes take from the cores.
    return {"result": result, "queued": queued, "cpu_us": cpu / max(1, result.requests) * 1e6}


def main(argv: list[str] | None = None) -> int:
    parser = size_parser(__doc__.splitlines()[0])
    parser.add_argument("--servers", default=",".join(SERVERS), help="comma-separated, from: " + ", ".join(SERVERS))
    args = parser.parse_args(argv)
    header("Receiver: DLR callbacks accepted and queued per second", ["-m", "bench.receiver", *(argv or sys.argv[1:])])
    print(
        f"wrk -t1 -c{CONNECTIONS} -d{SECONDS[args.size]}s (after a {WARMUP[args.size]} s warm-up), unique form DLRs\n"
    )
    rows = []
    with services("receiver") as svc:
        for name in args.servers.split(","):
            server = SERVERS[name]
            if server.needs and importlib.util.find_spec(server.needs) is None:
                print(f"{name}: skipped ({server.needs} is not installed)")
                continue
            real = measure(svc, server, "reach", args.size)
            # The production command serves Reach's app only: its baselines are gevent-w2's (its former server).
            baseline = SERVERS["gevent-w2"] if name == "production" else server
            trivial = measure(svc, baseline, "trivial", args.size)
            push = measure(svc, baseline, "push", args.size)
            result = real["result"]
            rows.append(
                [
                    name,
                    trivial["result"].rate,
                    push["result"].rate,
                    result.rate,
                    f"{result.rate / trivial['result'].rate:.0%}",
                    result.p50_ms,
                    result.p99_ms,
                    trivial["result"].p99_ms,
                    f"{trivial['cpu_us']:.0f} / {push['cpu_us']:.0f} / {real['cpu_us']:.0f}",
                    result.non_2xx + result.socket_errors,
                    f"{real['queued']:,} / {result.ok:,}",
                ]
            )
    table(
        [
            "server",
            "trivial req/s",
            "trivial+push req/s",
            "reach req/s",
            "ratio",
            "reach p50 ms",
            "reach p99 ms",
            "trivial p99 ms",
            "CPU µs/req trivial / push / reach",
            "errors",
            "queued / 200s",
        ],
        rows,
    )
    print(load_note())
    return 0


if __name__ == "__main__":
    sys.exit(main())
