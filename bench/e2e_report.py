"""bench.e2e's results: one run's figures, and the tables that compare them."""

from __future__ import annotations

import importlib.metadata
from dataclasses import dataclass, field

from bench.common import WrkResult

SYSTEMS = ("seed", "reach")
#: The process groups whose CPU is reported, in this order (a system has some of them).
GROUPS = ("server", "redis", "worker", "pg sessions", "pg autovacuum", "pg background")


@dataclass
class Run:
    system: str
    round: int
    count: int
    answered_s: float
    applied_s: float
    applied: int
    contacts: int
    wrk: WrkResult
    cpu: dict[str, float] = field(default_factory=dict)
    load: float = 0.0
    #: Outside the system's total: wrk's own CPU seconds, and the share of the machine's cores busy (every
    #: process: the system, wrk, the poller and anything else running) over the same window.
    wrk_cpu: float = float("nan")
    machine_busy: float = float("nan")

    @property
    def rate(self) -> float:
        return self.applied / self.applied_s if self.applied_s else 0.0

    def cpu_us(self, group: str) -> float:
        return self.cpu[group] / self.count * 1e6 if group in self.cpu else float("nan")

    @property
    def cpu_total_us(self) -> float:
        return sum(self.cpu.values()) / self.count * 1e6


def run_row(run: Run) -> list[object]:
    return [
        f"{run.system} {run.round}",
        f"{run.applied:,} / {run.count:,}",
        run.contacts,
        run.answered_s,
        run.applied_s,
        run.rate,
        run.wrk.p50_ms,
        run.wrk.p99_ms,
        run.wrk.non_2xx + run.wrk.socket_errors,
        *(run.cpu_us(group) for group in GROUPS),
        run.cpu_total_us,
        run.wrk_cpu / run.count * 1e6,
        f"{run.machine_busy:.0%}",
        f"{run.load:.2f}",
    ]


RUN_HEADERS = [
    "run", "applied", "contacts active", "all answered s", "all applied s", "DLRs/s end to end",
    "answer p50 ms", "answer p99 ms", "errors", *(f"CPU µs/DLR {group}" for group in GROUPS),
    "CPU µs/DLR total", "CPU µs/DLR wrk", "machine busy", "load 1 min",
]  # fmt: skip


def ratio_rows(runs: list[Run]) -> list[list[object]]:
    """Per round, every other system against that round's seed run."""
    rows: list[list[object]] = []
    for round_ in sorted({run.round for run in runs}):
        in_round = [run for run in runs if run.round == round_]
        seed = next((run for run in in_round if run.system == "seed"), None)
        if seed is None:
            continue
        for other in (run for run in in_round if run.system != "seed"):
            rows.append(
                [
                    round_,
                    other.system,
                    seed.rate,
                    other.rate,
                    f"{other.rate / seed.rate:.2f}x",
                    f"{other.wrk.p99_ms / seed.wrk.p99_ms:.2f}x",
                    f"{other.cpu_total_us / seed.cpu_total_us:.2f}x",
                ]
            )
    return rows


def versions() -> str:
    def version(name: str) -> str:
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            return "-"

    packages = ("flask", "gunicorn", "gevent", "celery", "redis", "psycopg", "granian")
    return ", ".join(f"{name} {version(name)}" for name in packages)
