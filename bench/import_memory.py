"""Import memory: peak RSS of the process doing a contact import, for a small and a large file (issue 12).

Each size imports two CSV files, N and 10 N rows (one row in ten not a number, one in ten a repeat), twice:
by `reach contacts import FILE` (peak RSS of that process, from the kernel's rusage) and by
`POST /api/contacts` to the production receiver (`gunicorn 'web:create_app()'`, one gevent worker,
restarted for each file; peak RSS of the worker, from /proc's VmHWM). The baseline of each, in the same
run, is the same process importing 100 rows. Memory is flat in the row count when the large file's peak
is about the small file's.

    python -m bench.import_memory --size full     # 100,000 and 1,000,000 rows
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import psutil
import requests

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
from reach_cli import processes

SIZES = {"tiny": (2_000, 20_000), "small": (10_000, 100_000), "full": (100_000, 1_000_000)}
BASELINE_ROWS = 100
MB = 2**20


@dataclass(frozen=True)
class Run:
    way: str
    rows: int
    seconds: float
    peak: int  # bytes
    baseline: int  # bytes: the same kind of process importing BASELINE_ROWS

    @property
    def growth(self) -> int:
        return self.peak - self.baseline


def write_csv(path: Path, rows: int, first: int) -> Path:
    """`rows` contacts numbered from `first`: one in ten not a number, one in ten a repeat of the row before."""
    with path.open("w", encoding="utf-8") as out:
        out.write("phone,name\n")
        for i in range(first, first + rows):
            if i % 10 == 3:
                out.write(f"bad{i},C{i}\n")
            elif i % 10 == 7:
                out.write(f"+2547{i - 1:08d},R{i}\n")
            else:
                out.write(f"+2547{i:08d},C{i}\n")
    return path


# -- the CLI ----------------------------------------------------------------------------------------------


def cli_peak(svc: Services, source: Path) -> tuple[float, int]:
    """Seconds and peak RSS (bytes) of `reach contacts import FILE`, as the kernel counted it."""
    command = [str(BIN / "python"), "-m", "reach_cli.main", "contacts", "import", str(source)]
    start = time.monotonic()
    process = subprocess.Popen(command, env=svc.env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    _pid, status, usage = os.wait4(process.pid, 0)
    seconds = time.monotonic() - start
    output = process.stdout.read().decode() if process.stdout else ""
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"reach contacts import failed:\n{output}")
    return seconds, usage.ru_maxrss * 1024  # kilobytes on Linux


# -- the receiver -----------------------------------------------------------------------------------------


def api_peak(svc: Services, source: Path, warm: Path) -> tuple[float, int, int]:
    """Seconds, peak RSS (bytes) and the RSS after a warm-up import of `warm`, of one fresh receiver worker
    importing `source`."""
    port = free_port()
    command = [str(BIN / "python"), "-m", *processes.receiver(f"127.0.0.1:{port}", workers=1)]
    with http_server(command, port, svc.env(), svc.workdir / "receiver.log") as server:
        [worker] = psutil.Process(server.pid).children()
        url = f"http://127.0.0.1:{port}/api/contacts"
        post(url, warm)
        baseline = worker.memory_info().rss
        start = time.monotonic()
        post(url, source)
        seconds = time.monotonic() - start
        return seconds, vm_hwm(worker.pid), baseline


def post(url: str, source: Path) -> None:
    headers = {"Authorization": f"Bearer {API_TOKEN}", "Content-Type": "text/csv"}
    with source.open("rb") as body:  # streamed from the file, with its length
        answer = requests.post(url, data=body, headers=headers, timeout=1800)
    answer.raise_for_status()


def vm_hwm(pid: int) -> int:
    """The process's peak resident set size so far (bytes)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc (Linux only)")


# -- the run ----------------------------------------------------------------------------------------------


def measure(svc: Services, sizes: tuple[int, int]) -> list[Run]:
    warm = write_csv(svc.workdir / "warm.csv", BASELINE_ROWS, 90_000_000)
    runs = []
    _, cli_baseline = cli_peak(svc, write_csv(svc.workdir / "cli-base.csv", BASELINE_ROWS, 91_000_000))
    for index, rows in enumerate(sizes):
        source = write_csv(svc.workdir / f"cli-{rows}.csv", rows, index * 10_000_000)
        seconds, peak = cli_peak(svc, source)
        runs.append(Run("reach contacts import", rows, seconds, peak, cli_baseline))
        print(f"  CLI {rows:,} rows: {seconds:.1f} s, peak {peak / MB:.0f} MB", flush=True)
    for index, rows in enumerate(sizes):
        source = write_csv(svc.workdir / f"api-{rows}.csv", rows, 40_000_000 + index * 10_000_000)
        seconds, peak, baseline = api_peak(svc, source, warm)
        runs.append(Run("POST /api/contacts", rows, seconds, peak, baseline))
        print(f"  API {rows:,} rows: {seconds:.1f} s, peak {peak / MB:.0f} MB", flush=True)
    return runs


def main(argv: list[str] | None = None) -> int:
    args = size_parser(__doc__.splitlines()[0]).parse_args(argv)
    sizes = SIZES[args.size]
    header("Import memory: peak RSS against the row count", ["-m", "bench.import_memory", *(argv or sys.argv[1:])])
    with services("imports") as svc:
        runs = measure(svc, sizes)
    print()
    table(
        ["way", "rows", "seconds", "rows/s", "peak RSS MB", f"baseline MB ({BASELINE_ROWS} rows)", "growth MB"],
        [[r.way, r.rows, r.seconds, r.rows / r.seconds, r.peak / MB, r.baseline / MB, r.growth / MB] for r in runs],
    )
    small, large = sizes
    ratios = []
    for way in dict.fromkeys(r.way for r in runs):
        by_rows = {r.rows: r for r in runs if r.way == way}
        ratio = by_rows[large].peak / by_rows[small].peak
        ratios.append(
            [way, f"{large // small} times", f"{ratio:.2f}", f"{by_rows[large].peak / by_rows[large].baseline:.2f}"]
        )
    table(["way", "rows, large / small", "peak RSS, large / small", "large peak / baseline"], ratios)
    print(load_note())
    return 0


if __name__ == "__main__":
    sys.exit(main())
