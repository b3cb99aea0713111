"""Planning's statements one at a time at scale: where a cycle's plan spends its time (issue 15).

Loads N contacts (bench.cycle's mix) into a database of its own, can plan H earlier cycles first (history:
every index then holds their entries too; a key led by the contact took each new entry among that contact's
earlier ones, until revision f4b7d2e9a6c3 put the cycle first), then
plans a new cycle R times in-process, each plan in a transaction rolled back and followed by VACUUM, and
times every statement planning sends (SQLAlchemy cursor events). `--explain` adds EXPLAIN (ANALYZE,
BUFFERS, WAL) of the plan's INSERT, also rolled back.

    python -m bench.plan_steps --size full --history 3 --runs 3
    python -m bench.plan_steps --keep reach_plan_steps ...   # keep (or reuse) the database: A/B across checkouts
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import create_engine, event, text
from sqlalchemy.engine import make_url

from bench.common import header, load_note, table
from bench.cycle import SIZES, load_contacts

MESSAGES = {"plain": "Hello from the benchmark", "name": "Hello {name}, your statement is ready"}


def _label(statement: str) -> str:
    """A short name for one of planning's statements, from its SQL."""
    flat = re.sub(r"\s+", " ", statement)
    rules = [
        ("INSERT INTO cycle_items", "insert items (INSERT … SELECT)"),
        ("UPDATE cycles", "record plan (UPDATE cycles)"),
        ("FROM cycles", "lock cycle"),
        ("GROUP BY cycle_items.channel", "count items by channel"),
        ("FROM cycle_items WHERE", "count voice items"),
        ("regexp", "SMS bill (per contact measure)"),
        ("substr(contacts.phone, 1, 4)", "SMS bill (by prefix)"),
        ("substr(contacts.phone, 1, 7)", "window prefixes"),
        ("AS status, count(*)", "skipped by status"),
        ("pg_advisory", "hold off erasures (advisory lock)"),
    ]
    for needle, name in rules:
        if needle in flat:
            return name
    return flat[:60]


@contextmanager
def statement_timer(engine) -> Iterator[list[tuple[str, float, str, object]]]:
    """Every statement the engine runs in the block, with its time."""
    timings: list[tuple[str, float, str, object]] = []

    def before(conn, cursor, statement, parameters, context, executemany):
        conn.info["plan_steps_start"] = time.perf_counter()

    def after(conn, cursor, statement, parameters, context, executemany):
        elapsed = time.perf_counter() - conn.info.pop("plan_steps_start")
        timings.append((_label(statement), elapsed, statement, parameters))

    event.listen(engine, "before_cursor_execute", before)
    event.listen(engine, "after_cursor_execute", after)
    try:
        yield timings
    finally:
        event.remove(engine, "before_cursor_execute", before)
        event.remove(engine, "after_cursor_execute", after)


def vacuum(url: str) -> None:
    engine = create_engine(url, isolation_level="AUTOCOMMIT")
    with engine.connect() as connection:
        connection.execute(text("VACUUM ANALYZE contacts"))
        connection.execute(text("VACUUM ANALYZE cycle_items"))
        connection.execute(text("CHECKPOINT"))
    engine.dispose()


def new_cycle(url: str, message: str) -> int:
    engine = create_engine(url)
    with engine.begin() as connection:
        cycle_id = connection.scalar(
            text("INSERT INTO cycles (state, message, created_at) VALUES ('planning', :m, now()) RETURNING id"),
            {"m": message},
        )
    engine.dispose()
    return int(cycle_id)


def plan_history(url: str, history: int, message: str) -> None:
    """Plan `history` cycles and keep them, finished, so the new plan's items join earlier ones: their items sent,
    as a finished cycle's are (pending, they would also sit in the claim indexes)."""
    from shared.db import session_scope
    from worker.cycles import plan_cycle

    for _ in range(history):
        cycle_id = new_cycle(url, message)
        start = time.perf_counter()
        with session_scope() as session:
            plan_cycle(session, cycle_id)
            session.execute(text("UPDATE cycles SET state = 'done' WHERE id = :id"), {"id": cycle_id})
            session.execute(text("UPDATE cycle_items SET state = 'sent' WHERE cycle_id = :id"), {"id": cycle_id})
        print(f"history cycle {cycle_id} planned in {time.perf_counter() - start:.2f} s", flush=True)


def backend_cpu(pid: int) -> float:
    """CPU seconds a local Postgres backend has used (less sensitive than wall time to other load); NaN when
    the server is not on this machine."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def plan_once(url: str, message: str, explain: bool) -> tuple[float, float, list[tuple[str, float, str, object]], str]:
    """Plan a new cycle in a transaction rolled back afterwards: its wall time, its backend's CPU time, its
    statements' times, and EXPLAIN's text."""
    from shared.db import _session_factory, get_engine
    from worker.cycles import plan_cycle

    cycle_id = new_cycle(url, message)
    with statement_timer(get_engine()) as timings, _session_factory()() as session:
        pid = session.connection().connection.driver_connection.info.backend_pid
        session.rollback()
        cpu, start = backend_cpu(pid), time.perf_counter()
        with session.begin():
            plan_cycle(session, cycle_id)
            session.flush()
            total, cpu = time.perf_counter() - start, backend_cpu(pid) - cpu
            session.rollback()
    plan = ""
    if explain:
        insert = next(t for t in timings if t[0].startswith("insert items"))
        with get_engine().connect() as connection:
            cursor = connection.connection.driver_connection.cursor()
            cursor.execute("EXPLAIN (ANALYZE, BUFFERS, WAL, TIMING OFF) " + insert[2], insert[3])
            plan = "\n".join(row[0] for row in cursor.fetchall())
            connection.rollback()
    engine = create_engine(url)
    with engine.begin() as connection:
        connection.execute(text("DELETE FROM cycles WHERE id = :id"), {"id": cycle_id})
    engine.dispose()
    return total, cpu, timings, plan


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=SIZES, default="full")
    parser.add_argument("--history", type=int, default=0, help="earlier cycles planned and kept first")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--message", choices=MESSAGES, default="name")
    parser.add_argument("--explain", action="store_true")
    parser.add_argument("--keep", metavar="DATABASE", help="keep this database afterwards (reused if loaded)")
    args = parser.parse_args(argv)
    header("Planning, statement by statement", ["-m", "bench.plan_steps", *(argv or sys.argv[1:])])
    base = make_url(os.environ.get("BENCH_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/reach_bench"))
    name = args.keep or f"{base.database}_plan_steps_{os.getpid()}"
    url = base.set(drivername="postgresql+psycopg", database=name).render_as_string(hide_password=False)
    with _database(url, reuse=bool(args.keep)) as loaded:
        os.environ["DATABASE_URL"] = url
        message = MESSAGES[args.message]
        if not loaded:
            start = time.perf_counter()
            load_contacts(url, SIZES[args.size])
            print(f"{SIZES[args.size]:,} contacts loaded in {time.perf_counter() - start:.1f} s", flush=True)
            plan_history(url, args.history, message)
        rows = []
        for run in range(args.runs):
            vacuum(url)
            total, cpu, timings, plan = plan_once(url, message, args.explain and run == args.runs - 1)
            for label, seconds, _sql, _params in timings:
                if seconds >= 0.01:
                    rows.append([run + 1, label, seconds])
            rows.append([run + 1, "plan_cycle total (no commit)", total])
            rows.append([run + 1, "  its Postgres backend's CPU time", cpu])
            print(f"run {run + 1}: {total:.2f} s, backend CPU {cpu:.2f} s", flush=True)
        table(["run", "statement (≥ 10 ms)", "seconds"], rows)
        if plan:
            print("\n```\n" + plan + "\n```\n")
    print(load_note())
    return 0


@contextmanager
def _database(url: str, *, reuse: bool) -> Iterator[bool]:
    """The database `url` names, migrated; yields whether it already held contacts (reused)."""
    from tests.services import fresh_database

    if reuse:
        engine = create_engine(url)
        try:
            with engine.connect() as connection:
                loaded = bool(connection.scalar(text("SELECT count(*) FROM contacts")))
        except Exception:
            loaded = False
        finally:
            engine.dispose()
        if loaded:
            yield True
            return
        from shared import migrate

        admin = create_engine(make_url(url).set(database="postgres"), isolation_level="AUTOCOMMIT")
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{make_url(url).database}" WITH (FORCE)'))
            connection.execute(text(f'CREATE DATABASE "{make_url(url).database}"'))
        admin.dispose()
        migrate.upgrade(url)
        yield False
        return
    with fresh_database(url):
        yield False


if __name__ == "__main__":
    sys.exit(main())
