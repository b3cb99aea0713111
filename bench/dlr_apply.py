"""DLR apply: N delivery reports for existing messages, queued in the inbox, applied by a real worker.

Loads N contacts and N sent messages (COPY), queues one DLR per message on the Redis inbox in the
receiver's own format, starts `celery -A worker worker --beat` (prefork, 2 processes) and times from
"ready" until every message carries its status and the inbox is empty. Baseline in the same run: the
same statuses applied by one raw COPY into a temp table + `UPDATE messages ... FROM` (forward-only).
CPU per DLR is counted too (steadier than the rate on a shared machine): the worker's process tree, the
Postgres backends of the benchmark's database (not the poller's own) and Redis, over the measured window.

    python -m bench.dlr_apply --size full     # 200,000 DLRs
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable
from datetime import UTC, datetime

import psutil
from sqlalchemy import Connection, create_engine, text

from bench.common import (
    Services,
    TreeRss,
    header,
    load_note,
    redis_cpu_seconds,
    services,
    size_parser,
    table,
    tree_cpu_seconds,
)
from shared.broker import make_celery
from shared.inbox import CLAIMS, INBOX, encode
from shared.settings import load_settings
from shared.status_policy import dlr_rank
from tests.services import WorkerProcess

SIZES = {"tiny": 2_000, "small": 20_000, "full": 200_000}
#: One report in this many is a failure with a reason; the rest are `Success`.
FAILED_EVERY = 5


def report_for(i: int) -> dict[str, str]:
    failed = i % FAILED_EVERY == 0
    return {
        "id": f"ATXid_bench_{i}",
        "status": "Failed" if failed else "Success",
        "phoneNumber": phone(i),
        "networkCode": "63902",
        "failureReason": "DeliveryFailure" if failed else "",
        "retryCount": "0",
    }


def phone(i: int) -> str:
    return f"+2547{i:08d}"


def load_messages(engine_url: str, n: int) -> None:
    """N contacts, each with one sent SMS awaiting its report (ids 1..N), by COPY."""
    engine = create_engine(engine_url)
    now = datetime.now(UTC)
    with engine.begin() as connection:
        cursor = connection.connection.driver_connection.cursor()
        with cursor.copy("COPY contacts (id, phone, status, last_message_id, created_at, updated_at) FROM STDIN") as cp:
            for i in range(1, n + 1):
                cp.write_row((i, phone(i), "pending", i, now, now))
        with cursor.copy(
            "COPY messages (id, at_message_id, contact_id, phone, text, send_state, created_at) FROM STDIN"
        ) as cp:
            for i in range(1, n + 1):
                cp.write_row((i, f"ATXid_bench_{i}", i, phone(i), "Hello from the benchmark", "sent", now))
        connection.execute(text("SELECT setval('contacts_id_seq', :n), setval('messages_id_seq', :n)"), {"n": n})
        connection.execute(text("ANALYZE contacts; ANALYZE messages"))
    engine.dispose()


def load_history(engine_url: str, cycles: int, waiting_calls: bool = False) -> None:
    """`cycles` finished cycles before the measured messages, each with a sent SMS item for every contact: what a
    business that has run cycles keeps (cycle_items has no retention), among which a delivery report's contact
    may be looked for. With `waiting_calls`, one more cycle, dispatching, holds a call for every contact until its
    window opens tomorrow: the call a `Success` then cancels (a fallback no longer needed)."""
    if not cycles and not waiting_calls:
        return
    engine = create_engine(engine_url)
    with engine.begin() as connection:
        for _ in range(cycles):
            _cycle_of_every_contact(connection, "done", "'sms', 'sent', 1, now(), false")
        if waiting_calls:
            _cycle_of_every_contact(connection, "dispatching", "'voice', 'pending', 0, now() + interval '1 day', true")
        connection.execute(text("ANALYZE cycles; ANALYZE cycle_items"))
    engine.dispose()


def _cycle_of_every_contact(connection: Connection, state: str, item: str) -> None:
    """A cycle in `state` with an item for every contact: `item` gives its channel, state, attempts,
    next_attempt_at and waiting_for_window, as SQL."""
    cycle_id = connection.scalar(
        text(
            "INSERT INTO cycles (state, message, created_at, planned_at)"
            f" VALUES ('{state}', 'Earlier', now(), now()) RETURNING id"
        )
    )
    connection.execute(
        text(
            "WITH new AS ("
            " INSERT INTO cycle_items (cycle_id, contact_id, channel, state, attempts, next_attempt_at,"
            f" waiting_for_window, updated_at) SELECT :cycle, id, {item}, now() FROM contacts ORDER BY id"
            " RETURNING id)"
            " UPDATE cycles SET first_item_id = (SELECT min(id) FROM new),"
            " last_item_id = (SELECT max(id) FROM new) WHERE id = :cycle"
        ),
        {"cycle": cycle_id},
    )


def queue_reports(svc: Services, n: int) -> None:
    """Push N DLRs as the receiver would (same JSON), oldest first, 5,000 per round trip."""
    chunk: list[str] = []
    for i in range(1, n + 1):
        chunk.append(encode("dlr", report_for(i))[1])
        if len(chunk) == 5000 or i == n:
            svc.redis.lpush(INBOX, *chunk)
            chunk = []


def applied(engine_url: str) -> int:
    engine = create_engine(engine_url)
    with engine.connect() as connection:
        count = connection.scalar(text("SELECT count(*) FROM messages WHERE status IS NOT NULL"))
    engine.dispose()
    return int(count or 0)


class BackendCpu:
    """CPU time of the Postgres backends serving the benchmark's database, except the poller's own: each backend
    seen is remembered with its last reading, so one that exits keeps what it used while it was seen."""

    def __init__(self, connection: Connection) -> None:
        self.connection = connection
        self.own = connection.scalar(text("SELECT pg_backend_pid()"))
        self.start: dict[int, float] = {}
        self.last: dict[int, float] = {}
        self.sample()
        self.start = dict(self.last)

    def sample(self) -> None:
        pids = self.connection.scalars(
            text("SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()")
        )
        for pid, seconds in _cpu_of(pids):
            self.last[pid] = seconds

    def seconds(self) -> float:
        return sum(seconds - self.start.get(pid, 0.0) for pid, seconds in self.last.items())


def _cpu_of(pids: Iterable[int]) -> Iterable[tuple[int, float]]:
    for pid in pids:
        try:
            times = psutil.Process(pid).cpu_times()
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        yield pid, times.user + times.system


def drain_with_worker(svc: Services, n: int, timeout: float) -> dict:
    engine = create_engine(svc.database_url)
    env = svc.env(log_level="INFO")
    worker = WorkerProcess(svc.workdir, "dlr", env)
    try:
        with TreeRss(worker.process.pid) as rss, engine.connect() as connection:
            backends = BackendCpu(connection)
            worker_cpu, redis_cpu = tree_cpu_seconds(worker.process.pid), redis_cpu_seconds(svc.redis)
            start = time.monotonic()
            celery = make_celery("bench", load_settings(redis_url=svc.redis_url))
            celery.send_task("reach.ingest.drain")  # beat would start one within 2 s anyway
            done = 0
            while time.monotonic() - start < timeout:
                done = connection.scalar(text("SELECT count(*) FROM messages WHERE status IS NOT NULL")) or 0
                connection.commit()
                backends.sample()
                if done >= n and svc.redis.llen(INBOX) == 0 and svc.redis.zcard(CLAIMS) == 0:
                    break
                time.sleep(0.25)
            elapsed = time.monotonic() - start
            worker_cpu = tree_cpu_seconds(worker.process.pid) - worker_cpu
            redis_cpu = redis_cpu_seconds(svc.redis) - redis_cpu
            backends.sample()
            contacts_moved = connection.scalar(text("SELECT count(*) FROM contacts WHERE status <> 'pending'")) or 0
    finally:
        worker.stop()
        engine.dispose()
    cpu = {"worker": worker_cpu, "postgres": backends.seconds(), "redis": redis_cpu}
    hot = hot_updates(svc.database_url, done)
    return {
        "seconds": elapsed,
        "applied": done,
        "contacts": contacts_moved,
        "rss": rss.peak_pss,
        "cpu": cpu,
        "hot": hot,
    }


#: The tables whose rows the drain updates: an update that is not HOT writes a new entry in every index of the row.
UPDATED_TABLES = ("messages", "contacts")


def hot_updates(engine_url: str, expected: int, timeout: float = 10.0) -> dict[str, tuple[int, int]]:
    """(updates, HOT updates) of each table the drain updates, once the statistics show `expected` messages updated
    (a backend reports its counts within a second or so of going idle)."""
    engine = create_engine(engine_url)
    query = text("SELECT relname, n_tup_upd, n_tup_hot_upd FROM pg_stat_user_tables WHERE relname = ANY(:names)")
    deadline = time.monotonic() + timeout
    with engine.connect() as connection:
        while True:
            counts = {name: (upd, hot) for name, upd, hot in connection.execute(query, {"names": list(UPDATED_TABLES)})}
            connection.commit()  # a new transaction sees fresh statistics
            if counts.get("messages", (0, 0))[0] >= expected or time.monotonic() > deadline:
                break
            time.sleep(0.25)
    engine.dispose()
    return counts


def raw_bulk_update(engine_url: str, n: int) -> float:
    """The baseline: the same N statuses by COPY + one UPDATE ... FROM, forward-only, in one transaction."""
    engine = create_engine(engine_url)
    with engine.begin() as connection:
        connection.execute(text("UPDATE messages SET status = NULL, status_rank = 0, failure_reason = NULL"))
    with engine.begin() as connection:
        start = time.monotonic()
        connection.execute(
            text(
                "CREATE TEMP TABLE dlr_in (at_message_id text, status text, rank int, failure_reason text,"
                " network_code text, received_at timestamptz) ON COMMIT DROP"
            )
        )
        cursor = connection.connection.driver_connection.cursor()
        now = datetime.now(UTC)
        with cursor.copy("COPY dlr_in FROM STDIN") as cp:
            for i in range(1, n + 1):
                r = report_for(i)
                cp.write_row(
                    (r["id"], r["status"], dlr_rank(r["status"]), r["failureReason"] or None, r["networkCode"], now)
                )
        connection.execute(
            text(
                "UPDATE messages m SET status = d.status, status_rank = d.rank, failure_reason = d.failure_reason,"
                " network_code = d.network_code, status_at = d.received_at"
                " FROM dlr_in d WHERE m.at_message_id = d.at_message_id AND m.status_rank < d.rank"
            )
        )
    elapsed = time.monotonic() - start
    engine.dispose()
    return elapsed


def main(argv: list[str] | None = None) -> int:
    args = size_parser(__doc__.splitlines()[0]).parse_args(argv)
    n = SIZES[args.size]
    header("DLR apply: queued delivery reports applied in Postgres", ["-m", "bench.dlr_apply", *(argv or sys.argv[1:])])
    with services("dlr") as svc:
        load_messages(svc.database_url, n)
        queue_reports(svc, n)
        print(f"{n:,} messages loaded and {svc.redis.llen(INBOX):,} DLRs queued; drain_batch_size "
              f"{load_settings().drain_batch_size}, worker prefork -c 2 with beat\n", flush=True)  # fmt: skip
        worker = drain_with_worker(svc, n, timeout=max(120, n / 200))
        raw = raw_bulk_update(svc.database_url, n)
    rate = worker["applied"] / worker["seconds"]
    table(
        ["path", "DLRs", "seconds", "DLRs/s", "ratio", "contacts moved", "worker peak PSS MB"],
        [
            ["worker: inbox → drain → Postgres", worker["applied"], worker["seconds"], rate,
             f"{rate / (n / raw):.0%}", worker["contacts"], worker["rss"] / 2**20],
            ["raw: COPY + UPDATE … FROM", n, raw, n / raw, "100%", "-", "-"],
        ],
    )  # fmt: skip
    per_dlr = {part: seconds / max(1, worker["applied"]) * 1e6 for part, seconds in worker["cpu"].items()}
    table(
        ["CPU µs per DLR", "worker tree", "Postgres backends", "Redis", "total"],
        [["drain", per_dlr["worker"], per_dlr["postgres"], per_dlr["redis"], sum(per_dlr.values())]],
    )
    for name, (updates, hot) in sorted(worker["hot"].items()):
        print(f"{name}: {updates:,} row updates, {hot:,} HOT ({hot / max(1, updates):.0%})")
    print(f"goal: ≥ 5,000 DLRs/s end to end → {'met' if rate >= 5000 else 'NOT met'}")
    print(load_note())
    return 0 if worker["applied"] == n else 1


if __name__ == "__main__":
    sys.exit(main())
