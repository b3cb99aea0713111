"""CPU time (user + system, from /proc/<pid>/stat through psutil) used by groups of processes during a run.

A group is a function returning its current processes (a server and its workers, Redis, a Postgres
database's sessions). A thread lists and reads every group a few times a second, keeping each process's
last reading: a process that exits mid-run keeps what it used up to its last sample, and one born mid-run
counts from zero. `used()` is then the CPU seconds each group spent between `start()` and `stop()`.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Iterable
from typing import Any

import psutil

Group = Callable[[], Iterable[psutil.Process]]

#: The Postgres processes that are no session: the WAL writer, checkpointer, background writer, ... They
#: serve every database on the server, so on a shared machine they also do other clients' work.
PG_BACKGROUND = (
    "walwriter",
    "checkpointer",
    "background writer",
    "autovacuum launcher",
    "logical replication launcher",
    "walsummarizer",
    "io worker",
)


def tree(pid: int) -> Group:
    """A process and its descendants (gunicorn's master and workers, celery's pool and embedded beat)."""
    root = psutil.Process(pid)

    def processes() -> list[psutil.Process]:
        try:
            return [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    return processes


def single(pid: int) -> Group:
    process = psutil.Process(pid)
    return lambda: [process]


def postgres_sessions(postmaster: psutil.Process, database: str, exclude: set[int]) -> Group:
    """The sessions working for `database`, minus `exclude` (the benchmark's own polling session). Their titles
    read `postgres: ... <user> <database> <client> ...`."""

    def processes() -> list[psutil.Process]:
        return [p for p in _of_database(postmaster, database) if p.pid not in exclude and not _autovacuum(p)]

    return processes


def postgres_autovacuum(postmaster: psutil.Process, database: str) -> Group:
    """The autovacuum workers vacuuming or analysing `database`: whether one runs inside a measured window
    depends on when the updates cross its thresholds, so they are a group of their own."""
    return lambda: [p for p in _of_database(postmaster, database) if _autovacuum(p)]


def _of_database(postmaster: psutil.Process, database: str) -> list[psutil.Process]:
    return [p for p in _children(postmaster) if f" {database} " in f"{_title(p)} "]


def _autovacuum(process: psutil.Process) -> bool:
    return "autovacuum worker" in _title(process)


def postgres_background(postmaster: psutil.Process) -> Group:
    """The postmaster and its background processes (PG_BACKGROUND)."""

    def processes() -> list[psutil.Process]:
        return [postmaster, *(p for p in _children(postmaster) if _title(p).endswith(PG_BACKGROUND))]

    return processes


def _children(process: psutil.Process) -> list[psutil.Process]:
    try:
        return process.children()
    except psutil.NoSuchProcess:
        return []


def _title(process: psutil.Process) -> str:
    try:
        return " ".join(process.cmdline()).strip()
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return ""


class CpuSampler:
    def __init__(self, groups: dict[str, Group], interval: float = 0.2) -> None:
        self.groups = groups
        self.interval = interval
        self._first: dict[str, dict[int, float]] = {name: {} for name in groups}
        self._last: dict[str, dict[int, float]] = {name: {} for name in groups}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self._sample(first=True)
        self._thread.start()

    def stop(self) -> dict[str, float]:
        self._stop.set()
        self._thread.join(5)
        self._sample()
        return self.used()

    def used(self) -> dict[str, float]:
        return {
            name: sum(cpu - self._first[name].get(pid, 0.0) for pid, cpu in last.items())
            for name, last in self._last.items()
        }

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    def _sample(self, first: bool = False) -> None:
        for name, group in self.groups.items():
            for process in group():
                cpu = seconds_used(process)
                if math.isnan(cpu):  # gone since it was listed
                    continue
                self._last[name][process.pid] = cpu
                if first:
                    self._first[name][process.pid] = cpu


def seconds_used(process: psutil.Process) -> float:
    """A live process's CPU seconds so far (NaN once it is gone)."""
    try:
        times = process.cpu_times()
    except (psutil.NoSuchProcess, psutil.ZombieProcess):
        return float("nan")
    return times.user + times.system


def busy_share(since: Any) -> float:
    """The share of the machine's cores busy (neither idle nor waiting on I/O) since `since` (an earlier
    `psutil.cpu_times()`): whatever ran, the benchmark's processes or not."""
    now = psutil.cpu_times()
    spent = {name: getattr(now, name) - getattr(since, name) for name in _CPU_STATES if hasattr(now, name)}
    total = sum(spent.values())
    return 1 - (spent["idle"] + spent.get("iowait", 0.0)) / total if total > 0 else float("nan")


#: /proc/stat's states that add up to the time of all cores (guest time is already inside `user`).
_CPU_STATES = ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal")
