"""End to end: AT posts N unique delivery reports; how soon is every message's status durably in Postgres?

Two systems on the same preloaded data (N contacts, each with one sent SMS awaiting its report), run
alternately in one process (seed, Reach, seed, Reach, ...), each on a fresh copy of the database:

- seed: the seed prototype's design (bench/seed_app.py): Flask, INSERT + UPDATEs + COMMIT inside each
  request, `gunicorn -k sync -w 4`. Every 200 is applied.
- reach: Reach as `reach up` runs it (reach_cli/processes.py): the receiver (`python -m web.serve`: granian
  with the async front, 1 process; or --receiver) queues on a private Redis with `--appendonly yes
  --appendfsync always`, and `celery -A worker worker --beat` (prefork, 2 processes) applies the inbox.

Postgres runs with `synchronous_commit=on` (set on each run's database): in both systems a 200 means durable.
wrk (1 thread, 32 connections, bench/lua/e2e_dlr.lua) posts each report once; the clock runs from the first
post until a poll sees all N messages `Success` in Postgres. Reported per run: DLRs/s end to end, the
callback answer's p50/p99 (wrk), and CPU µs per DLR by process group (bench/cpu_groups.py).

    python -m bench.e2e --size full                      # 40,000 DLRs, 2 rounds
    python -m bench.e2e --size small --systems reach --receiver granian
    python -m bench.e2e --receiver-command 'granian --interface wsgi --port {port} ... web:create_app'
    python -m bench.e2e --size full --compare /tmp/before     # also Reach from another checkout, same run
    python -m bench.e2e --size full --history 10              # the contacts have items in 10 earlier cycles
    python -m bench.e2e --size full --history 10 --waiting-calls   # ... and a call waiting each, which a report cancels
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path

import psutil
import psycopg
import redis
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from bench import cpu_groups
from bench.common import (
    BIN,
    ROOT,
    SIZES,
    WEBHOOK_TOKEN,
    Services,
    WrkResult,
    free_port,
    header,
    http_server,
    load_note,
    parse_wrk,
    table,
    wrk_command,
)
from bench.dlr_apply import load_history, load_messages
from bench.e2e_report import RUN_HEADERS, SYSTEMS, Run, ratio_rows, run_row, versions
from reach_cli import processes
from tests.services import WorkerProcess, fresh_database, redis_server

COUNTS = {"tiny": 300, "small": 5_000, "full": 40_000}
ROUNDS = {"tiny": 1, "small": 1, "full": 2}
CONNECTIONS = 32
#: AT message ids of the preloaded messages (bench.dlr_apply.load_messages): PREFIX1 .. PREFIX<N>.
PREFIX = "ATXid_bench_"
REDIS_AOF = ("--appendonly", "yes", "--appendfsync", "always")


@dataclass
class Target:
    """A system under test, running: where to post and which processes are its own."""

    url: str
    groups: dict[str, cpu_groups.Group]


#: Starts a system on a database (workdir, database URL) and stops it after.
Starter = Callable[[Path, str], AbstractContextManager[Target]]


# -- the systems ----------------------------------------------------------------------------------------------


@contextmanager
def seed_system(workdir: Path, database_url: str) -> Iterator[Target]:
    port = free_port()
    command = [str(BIN / "gunicorn"), "--bind", f"127.0.0.1:{port}", "-k", "sync", "-w", "4", "bench.seed_app:app"]
    env = {**os.environ, "DATABASE_URL": database_url}
    with http_server(command, port, env, workdir / "seed.log") as server:
        yield Target(f"http://127.0.0.1:{port}", {"server": cpu_groups.tree(server.pid)})


@contextmanager
def reach_system(workdir: Path, database_url: str, receiver: list[str] | None, root: Path = ROOT) -> Iterator[Target]:
    """Reach from the checkout `root` (this one unless --compare): its code, this virtualenv."""
    with redis_server(workdir, *REDIS_AOF) as redis:
        assert redis.process is not None
        client = Services(workdir, database_url, redis.url, _redis_client(redis.port))
        try:
            fsync = client.redis.config_get("appendfsync")["appendfsync"]
            if fsync != "always" or client.redis.config_get("appendonly")["appendonly"] != "yes":
                raise RuntimeError(f"the benchmark's Redis is not on AOF appendfsync always ({fsync})")
            # Production's settings but one: the callback rate limit (per client address) is counted as ever,
            # but wide enough that wrk, one address, is never refused (AT posts from several).
            # The receiver creates the metrics directory (web/serve.py); another server would not.
            (workdir / "prometheus").mkdir()
            env = client.env(
                log_level="INFO",
                rate_limit_callbacks="1000000/second",
                prometheus_multiproc_dir=workdir / "prometheus",
                **({"pythonpath": root} if root != ROOT else {}),
            )
            worker = WorkerProcess(workdir, "worker", env, cwd=root)
            try:
                port = free_port()
                command = _receiver_command(receiver or tree_receiver_command(root), port)
                with http_server(command, port, env, workdir / "receiver.log", cwd=root) as server:
                    yield Target(
                        f"http://127.0.0.1:{port}",
                        {
                            "server": cpu_groups.tree(server.pid),
                            "redis": cpu_groups.single(redis.process.pid),
                            "worker": cpu_groups.tree(worker.process.pid),
                        },
                    )
            finally:
                worker.stop()
        finally:
            client.redis.close()


def _redis_client(port: int) -> redis.Redis:
    return redis.Redis(port=port, decode_responses=True)


def tree_receiver_command(root: Path) -> list[str]:
    """The receiver's command line as the checkout `root` writes it (its reach_cli/processes.py), bind `{bind}`."""
    code = "import json; from reach_cli import processes; print(json.dumps(processes.receiver('{bind}')))"
    env = {**os.environ, "PYTHONPATH": str(root)}
    out = subprocess.run([sys.executable, "-c", code], cwd=root, env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def _receiver_command(template: list[str], port: int) -> list[str]:
    """A receiver command line with its port filled in, its program from this virtualenv when it has it."""
    command = [part.replace("{bind}", f"127.0.0.1:{port}").replace("{port}", str(port)) for part in template]
    program = BIN / command[0]
    if program.exists():
        return [str(program), *command[1:]]
    if shutil.which(command[0]) is None:  # a module, as processes.receiver writes it (`web.serve`)
        return [str(BIN / "python"), "-m", *command]
    return command


RECEIVERS = {
    "production": None,  # the checkout's processes.receiver: what compose and `reach up` run
    "granian": [
        "granian", "--interface", "wsgi", "--host", "127.0.0.1", "--port", "{port}", "--workers", "2",
        "--log-level", "warning", "--no-ws", "--factory", "web:create_app",
    ],
}  # fmt: skip


# -- one run ---------------------------------------------------------------------------------------------------


@contextmanager
def run_database(template_url: str, name: str) -> Iterator[str]:
    """A copy of the loaded template database (FILE_COPY: the copy starts after a checkpoint, as every run's),
    committing synchronously whatever the server's default; dropped afterwards."""
    url = make_url(template_url)
    admin = create_engine(url.set(database="postgres"), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            connection.execute(text(f'CREATE DATABASE "{name}" TEMPLATE "{url.database}" STRATEGY FILE_COPY'))
            connection.execute(text(f'ALTER DATABASE "{name}" SET synchronous_commit = on'))
        yield url.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


class WrkRun:
    """wrk posting the N reports; notes when the Lua script has every answer, then ends wrk for its report."""

    def __init__(self, url: str, count: int, first: int = 1) -> None:
        # A ceiling only (the script stops wrk once every report is answered), so a generous one: 10 DLRs/s. The
        # seed's design did 92/s on this machine at load 13-19; a ceiling of 100/s cut a full-size run short.
        seconds = count / 10 + 60
        command = wrk_command(url, "e2e_dlr.lua", connections=CONNECTIONS, seconds=seconds)
        env = {**os.environ, "WRK_COUNT": str(count), "WRK_TOKEN": WEBHOOK_TOKEN, "WRK_PREFIX": PREFIX,
               "WRK_FIRST": str(first)}  # fmt: skip
        self.lines: list[str] = []
        self.answered_at: float | None = None
        self._answered = threading.Event()
        self.process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self.timeout = seconds + 30

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line)
            if line.startswith("e2e: answered"):
                self.answered_at = time.monotonic()
                self._answered.set()
        self._answered.set()  # wrk ended (its ceiling) without every answer

    def wait_answered(self) -> float | None:
        self._answered.wait(self.timeout)
        return self.answered_at

    def finish(self) -> WrkResult:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)  # wrk sleeps out its duration unless interrupted
        self.process.wait(30)
        self._reader.join(10)
        if self.process.stdout is not None:
            self.process.stdout.close()
        return parse_wrk("".join(self.lines))


def wait_applied(poller: psycopg.Connection, count: int, deadline: float) -> tuple[int, float]:
    """Poll until `count` messages show `Success`; returns how many did and when the last poll began (its
    snapshot is taken then)."""
    applied, began = 0, time.monotonic()
    while time.monotonic() < deadline:
        began = time.monotonic()
        applied = poller.execute("SELECT count(*) FROM messages WHERE status = 'Success'").fetchone()[0]
        if applied >= count:
            break
        time.sleep(0.05)
    return applied, began


def warm_up_count(count: int) -> int:
    """Reports posted (and applied) before the measured ones, for messages of their own: imports, pools and
    caches are warm in both systems when the clock starts."""
    return max(50, min(2_000, count // 10))


def run_once(system: str, starter: Starter, round_: int, template_url: str, count: int) -> Run:
    """Start the system on a fresh copy of the data, warm it up, then post `count` reports and time them.
    Messages 1..count are the measured ones; count+1.. the warm-up's."""
    name = f"{make_url(template_url).database}_{system}_{round_}"
    warm = warm_up_count(count)
    with (
        run_database(template_url, name) as database_url,
        _workdir(system) as workdir,
        starter(workdir, database_url) as target,
        psycopg.connect(_libpq(database_url), autocommit=True) as poller,
    ):
        warm_up = WrkRun(target.url, warm, first=count + 1)
        warm_up.wait_answered()
        warm_up.finish()
        if wait_applied(poller, warm, time.monotonic() + 120)[0] < warm:
            raise RuntimeError(f"{system}: the warm-up's {warm} reports were not applied within 120 s")
        postmaster = psutil.Process(poller.info.backend_pid).parent()
        assert postmaster is not None
        groups = {
            **target.groups,
            "pg sessions": cpu_groups.postgres_sessions(postmaster, name, {poller.info.backend_pid}),
            "pg autovacuum": cpu_groups.postgres_autovacuum(postmaster, name),
            "pg background": cpu_groups.postgres_background(postmaster),
        }
        sampler = cpu_groups.CpuSampler(groups)
        sampler.start()
        machine = psutil.cpu_times()
        start = time.monotonic()
        wrk = WrkRun(target.url, count)
        answered_at = wrk.wait_answered()
        applied, applied_at = wait_applied(poller, warm + count, time.monotonic() + max(120, count / 10))
        cpu = sampler.stop()
        busy = cpu_groups.busy_share(machine)
        wrk_cpu = cpu_groups.seconds_used(psutil.Process(wrk.process.pid))  # it waits for its SIGINT
        result = wrk.finish()
        contacts = poller.execute("SELECT count(*) FROM contacts WHERE status = 'active'").fetchone()[0]
    if answered_at is None:
        print(f"{system} round {round_}: wrk ended before every report was answered:\n{''.join(wrk.lines)}")
    return Run(
        system=system,
        round=round_,
        count=count,
        answered_s=(answered_at or float("nan")) - start,
        applied_s=applied_at - start,
        applied=applied - warm,
        contacts=contacts - warm,
        wrk=result,
        cpu=cpu,
        load=os.getloadavg()[0],
        wrk_cpu=wrk_cpu,
        machine_busy=busy,
    )


@contextmanager
def _workdir(system: str) -> Iterator[Path]:
    import tempfile

    with tempfile.TemporaryDirectory(prefix=f"reach-bench-e2e-{system}-") as tmp:
        yield Path(tmp)


def _libpq(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def postgres_durability(url: str) -> str:
    with psycopg.connect(_libpq(url)) as connection:
        values = [connection.execute(f"SHOW {name}").fetchone()[0] for name in ("fsync", "wal_sync_method")]
    return f"fsync={values[0]}, wal_sync_method={values[1]}, synchronous_commit=on (set on each run's database)"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=SIZES, default="small", help="tiny: seconds; small: 5,000; full: 40,000")
    parser.add_argument("--count", type=int, help="DLRs per run (default: by --size)")
    parser.add_argument("--rounds", type=int, help="rounds of seed then Reach (default: by --size)")
    parser.add_argument("--systems", default=",".join(SYSTEMS), help="comma-separated, from: seed, reach")
    parser.add_argument("--receiver", choices=RECEIVERS, default="production", help="Reach's receiver server")
    parser.add_argument(
        "--receiver-command",
        help="Reach's receiver as a command line; {port} and {bind} are filled in (overrides --receiver)",
    )
    parser.add_argument(
        "--history", type=int, default=0, help="finished cycles before, an item per contact each (Reach reads them)"
    )
    parser.add_argument(
        "--waiting-calls", action="store_true", help="and a dispatching cycle holding a call per contact (cancelled)"
    )
    parser.add_argument(
        "--compare",
        type=Path,
        metavar="CHECKOUT",
        help="also run Reach from another checkout (e.g. `git worktree add /tmp/before <commit>`), as system "
        "`compare` after `reach` in each round; the schema is this checkout's migrations",
    )
    return parser.parse_args(argv)


def starters(args: argparse.Namespace) -> dict[str, Starter]:
    """The systems to run, in each round's order."""
    receiver = shlex.split(args.receiver_command) if args.receiver_command else RECEIVERS[args.receiver]
    chosen: dict[str, Starter] = {}
    if "seed" in args.systems.split(","):
        chosen["seed"] = seed_system
    if "reach" in args.systems.split(","):
        chosen["reach"] = functools.partial(reach_system, receiver=receiver)
    if args.compare:
        chosen["compare"] = functools.partial(reach_system, receiver=receiver, root=args.compare.resolve())
    return chosen


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # A SIGTERM (`timeout`, a CI job cancelled) unwinds like Ctrl-C: servers stopped, databases dropped.
    previous = signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        return run_all(args, argv)
    finally:
        signal.signal(signal.SIGTERM, previous)


def run_all(args: argparse.Namespace, argv: list[str] | None) -> int:
    count = args.count or COUNTS[args.size]
    rounds = args.rounds or ROUNDS[args.size]
    systems = starters(args)
    receiver = shlex.split(args.receiver_command) if args.receiver_command else RECEIVERS[args.receiver]
    title = "End to end: delivery reports posted until applied in Postgres"
    header(title, ["-m", "bench.e2e", *(argv or sys.argv[1:])])
    base = make_url(os.environ.get("BENCH_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/reach_bench"))
    template = base.set(database=f"{base.database}_e2e_{os.getpid()}").render_as_string(hide_password=False)
    runs: list[Run] = []
    with fresh_database(template) as template_url:
        load_messages(template_url, count + warm_up_count(count))
        load_history(template_url, args.history, args.waiting_calls)
        waiting = "; a dispatching cycle holds a call per contact for its window" if args.waiting_calls else ""
        shown = _receiver_command(receiver or tree_receiver_command(ROOT), 0)
        reach_receiver = shlex.join(shown).replace(str(BIN) + "/", "").replace(":0 ", ":PORT ")
        print(
            f"{count:,} messages measured (+{warm_up_count(count):,} of their own for a warm-up applied first); "
            f"wrk -t1 -c{CONNECTIONS} posts one `Success` DLR for each; {rounds} round(s): {', '.join(systems)}; "
            f"{args.history} finished cycle(s) before, an item per contact each{waiting}  \n"
            f"postgres: {postgres_durability(template_url)}  \n"
            f"reach: redis-server {' '.join(REDIS_AOF)}; receiver `{reach_receiver}`; "
            f"worker `celery -A worker worker --beat` (prefork -c {processes.ALL_QUEUES.concurrency})  \n"
            f"seed: `gunicorn -k sync -w 4 bench.seed_app:app` (bench/seed_app.py)  \n"
            + (f"compare: Reach from {args.compare.resolve()}, same commands  \n" if args.compare else "")
            + f"versions: {versions()}\n",
            flush=True,
        )
        for round_ in range(1, rounds + 1):
            for system, starter in systems.items():
                run = run_once(system, starter, round_, template_url, count)
                runs.append(run)
                print(f"{system} {round_}: {run.rate:,.0f} DLRs/s, p99 {run.wrk.p99_ms:.1f} ms, "
                      f"{run.cpu_total_us:,.0f} CPU µs/DLR, load {run.load:.2f}", flush=True)  # fmt: skip
    print()
    table(RUN_HEADERS, [run_row(run) for run in runs])
    ratios = ratio_rows(runs)
    if ratios:
        table(["round", "system", "seed DLRs/s", "its DLRs/s", "DLRs/s / seed", "p99 / seed", "CPU / seed"], ratios)
    print(
        "CPU: user + system from /proc per process group over the run; `pg sessions` are the run database's "
        "sessions (not the benchmark's polling session), `pg autovacuum` its autovacuum workers (they run when the "
        "updates cross their thresholds, inside a run or not), `pg background` the postmaster, WAL writer, "
        "checkpointer and background writer, which also serve other databases on a shared server. Outside the "
        "total: `wrk`, the load generator's own CPU, and `machine busy`, the share of all cores busy over the run "
        "(every process): near 100 %, the cores, not the system's latency, set the rate."
    )
    for run in runs:
        if run.wrk.non_2xx or run.wrk.socket_errors:
            print(f"{run.system} {run.round}: {run.wrk.non_2xx} answers not 2xx and {run.wrk.socket_errors} socket "
                  "errors: the latency figures are suspect (see the server's log)")  # fmt: skip
    print(load_note())
    return 0 if all(run.applied == run.count and run.contacts == run.count for run in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
