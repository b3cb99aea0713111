"""What every benchmark shares: its own services, the machine's description, wrk, tables, process RSS.

Benchmarks start a private redis-server and a fresh database on the machine's Postgres (the same helpers
the tests use, `tests.services`), so nothing they do touches the shared Redis or another run's data.
The machine is shared and noisy: each benchmark measures a baseline in the same run and reports the
ratio as well as the absolute figures.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import redis
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from tests.services import ROOT, free_port, fresh_database, private_redis, reset_cached_clients

SIZES = ("tiny", "small", "full")
WEBHOOK_TOKEN = "bench-webhook-token-0123456789"
API_TOKEN = "bench-operator-token-0123456789"
AT_API_KEY = "bench-at-api-key"
AT_VOICE_NUMBER = "+254711082000"
BIN = Path(sys.executable).parent


def size_parser(description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument(
        "--size", choices=SIZES, default="small", help="tiny: a smoke run; small: seconds; full: the real figures"
    )
    return parser


# -- services ---------------------------------------------------------------------------------------------


@dataclass
class Services:
    workdir: Path
    database_url: str
    redis_url: str
    redis: redis.Redis

    def env(self, **extra: object) -> dict[str, str]:
        """The environment a Reach process (receiver, worker) needs to run on these services."""
        return {
            **os.environ,
            "DATABASE_URL": self.database_url,
            "REDIS_URL": self.redis_url,
            "WEBHOOK_TOKEN": WEBHOOK_TOKEN,
            "API_TOKEN": API_TOKEN,
            "AT_USERNAME": "sandbox",
            "AT_API_KEY": AT_API_KEY,
            "AT_VOICE_NUMBER": AT_VOICE_NUMBER,
            "LOG_LEVEL": "WARNING",
            **{k.upper(): str(v) for k, v in extra.items()},
        }


@contextmanager
def services(name: str) -> Iterator[Services]:
    """A private Redis and a fresh, migrated database, both removed afterwards."""
    base = make_url(os.environ.get("BENCH_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/reach_bench"))
    url = base.set(database=f"{base.database}_{name}_{os.getpid()}").render_as_string(hide_password=False)
    with tempfile.TemporaryDirectory(prefix=f"reach-bench-{name}-") as tmp:
        workdir = Path(tmp)
        with fresh_database(url) as database_url, private_redis(workdir) as port:
            client = redis.Redis(port=port)
            try:
                yield Services(workdir, database_url, f"redis://127.0.0.1:{port}/0", client)
            finally:
                client.close()


@contextmanager
def use_services_here(svc: Services, **extra: object) -> Iterator[None]:
    """Point this process's settings (and cached engine, Redis, AT client) at the benchmark's services while in
    the block; after it, the environment and those caches are as they were (a benchmark run in-process by
    tests/test_bench.py must not leave the next tests on its dropped database)."""
    saved = dict(os.environ)
    os.environ.update(svc.env(**extra))
    reset_cached_clients()
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)
        reset_cached_clients()


# -- servers ----------------------------------------------------------------------------------------------


@contextmanager
def http_server(
    command: Sequence[str], port: int, env: dict[str, str], log: Path, cwd: Path = ROOT
) -> Iterator[subprocess.Popen]:
    """Run an HTTP server process (its own process group, in `cwd`) until it accepts on `port`; stop it after."""
    with log.open("ab") as out:
        process = subprocess.Popen(
            list(command), cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            deadline = time.monotonic() + 30
            while not _accepts(port):
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"{command[0]} did not start:\n{log.read_text(errors='replace')[-3000:]}")
                time.sleep(0.1)
            # The listening socket opens before the workers have imported the app: wait for answers.
            _wait_for_answers(port, deadline)
            yield process
        finally:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
                try:
                    process.wait(15)
                except subprocess.TimeoutExpired:
                    os.killpg(process.pid, signal.SIGKILL)
                    process.wait(5)


def _wait_for_answers(port: int, deadline: float, count: int = 20) -> None:
    import urllib.error
    import urllib.request

    answered = 0
    while answered < count:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5).read()
            answered += 1
        except urllib.error.HTTPError:
            answered += 1
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def _accepts(port: int) -> bool:
    import socket

    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex(("127.0.0.1", port)) == 0


# -- wrk ----------------------------------------------------------------------------------------------------

BENCH_DIR = Path(__file__).resolve().parent


@dataclass
class WrkResult:
    requests: int
    seconds: float
    rate: float
    p50_ms: float
    p99_ms: float
    non_2xx: int
    socket_errors: int

    @property
    def ok(self) -> int:
        return self.requests - self.non_2xx


def wrk_command(
    url: str, script: str, *, connections: int, seconds: float, threads: int = 1, env: dict[str, str] | None = None
) -> list[str]:
    if shutil.which("wrk") is None:
        raise RuntimeError("wrk is not installed (apt-get install -y wrk)")
    return [
        "wrk", f"-t{threads}", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--latency", "--timeout", "10s",
        "-s", str(BENCH_DIR / "lua" / script), url,
    ]  # fmt: skip


def run_wrk(
    url: str, script: str, *, connections: int, seconds: float, threads: int = 1, **lua_env: object
) -> WrkResult:
    """Run wrk with a Lua script from bench/lua (its options through the environment) and parse its report."""
    env = {**os.environ, **{f"WRK_{k.upper()}": str(v) for k, v in lua_env.items()}}
    command = wrk_command(url, script, connections=connections, seconds=seconds, threads=threads)
    output = subprocess.run(command, env=env, capture_output=True, text=True, check=True, timeout=seconds + 60).stdout
    return parse_wrk(output)


def parse_wrk(output: str) -> WrkResult:
    def latency(pct: str) -> float:
        match = re.search(rf"^\s+{pct}%\s+([\d.]+)(us|ms|s)\s*$", output, re.M)
        if match is None:
            return float("nan")
        value, unit = float(match.group(1)), match.group(2)
        return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value

    done = re.search(r"(\d+) requests in ([\d.]+)(ms|s|m)", output)
    if done is None:
        raise RuntimeError(f"unexpected wrk output:\n{output}")
    seconds = float(done.group(2)) * {"ms": 0.001, "s": 1, "m": 60}[done.group(3)]
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output)
    return WrkResult(
        requests=int(done.group(1)),
        seconds=seconds,
        rate=int(done.group(1)) / seconds,
        p50_ms=latency("50"),
        p99_ms=latency("99"),
        non_2xx=int(non_2xx.group(1)) if non_2xx else 0,
        socket_errors=sum(int(g) for g in errors.groups()) if errors else 0,
    )


# -- process memory -------------------------------------------------------------------------------------------


class TreeRss:
    """Samples the memory of a process and its descendants; keeps the peaks (bytes).

    RSS summed over a forked tree counts the pages parent and children share once per process; PSS
    (proportional set size) divides each shared page among its sharers, so its sum is the tree's real use.
    """

    def __init__(self, pid: int, interval: float = 0.2) -> None:
        self.root = psutil.Process(pid)
        self.interval = interval
        self.peak_total = 0
        self.peak_single = 0
        self.peak_pss = 0
        #: The tree's PSS at the latest sample.
        self.last_pss = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> TreeRss:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join(5)

    def sample(self) -> None:
        sizes, pss = [], 0
        try:
            processes = [self.root, *self.root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return
        for process in processes:
            try:
                info = process.memory_full_info()
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
            sizes.append(info.rss)
            pss += getattr(info, "pss", info.rss)
        self.peak_total = max(self.peak_total, sum(sizes))
        self.last_pss = pss
        self.peak_pss = max(self.peak_pss, pss)
        self.peak_single = max(self.peak_single, max(sizes, default=0))

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.interval)


def tree_cpu_seconds(pid: int) -> float:
    """CPU time (user + system) used so far by a process and its live descendants."""
    root = psutil.Process(pid)
    total = 0.0
    for process in [root, *root.children(recursive=True)]:
        try:
            times = process.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += times.user + times.system
    return total


def redis_cpu_seconds(client: redis.Redis) -> float:
    info = client.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


# -- reporting --------------------------------------------------------------------------------------------


def machine() -> dict[str, str]:
    def version(command: list[str]) -> str:
        try:
            return subprocess.run(command, capture_output=True, text=True, timeout=10).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return "?"

    pg_url = os.environ.get("BENCH_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
    engine = create_engine(make_url(pg_url).set(drivername="postgresql+psycopg", database="postgres"))
    with engine.connect() as connection:
        postgres = connection.scalar(text("SHOW server_version"))
        shared_buffers = connection.scalar(text("SHOW shared_buffers"))
    engine.dispose()
    redis_version = re.search(r"v=(\S+)", version(["redis-server", "--version"]))
    return {
        "nproc": str(os.cpu_count()),
        "python": platform.python_version(),
        "postgres": f"{postgres} (shared_buffers={shared_buffers})",
        "redis": redis_version.group(1) if redis_version else "?",
        "load average at start": " ".join(f"{x:.2f}" for x in os.getloadavg()),
    }


def header(title: str, argv: Sequence[str] | None = None) -> None:
    argv = list(sys.argv if argv is None else argv)
    print(f"## {title}\n")
    print(f"command: `{' '.join([Path(sys.executable).name, *argv])}`  ")
    print(f"started: {time.strftime('%Y-%m-%d %H:%M:%S %Z')}  ")
    print("machine: " + ", ".join(f"{k} {v}" for k, v in machine().items()) + "\n", flush=True)


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    cells = [[_fmt(c) for c in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(headers)]
    print("| " + " | ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)) + " |")
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for row in cells:
        print("| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |")
    print(flush=True)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        if value != value:  # NaN
            return "-"
        return f"{value:,.0f}" if abs(value) >= 100 else f"{value:,.2f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def load_note() -> str:
    return "load average at end: " + " ".join(f"{x:.2f}" for x in os.getloadavg())


__all__ = ["BIN", "ROOT", "free_port"]
