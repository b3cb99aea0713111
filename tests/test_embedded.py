"""`reach up --demo` on a machine with only Python: no DATABASE_URL, no REDIS_URL, no redis-server on
PATH, no AT credentials. Real processes (receiver, worker with beat, simulator), a real SQLite file.

The demo must leave contacts in every status with calls recorded, and Ctrl-C (SIGINT) must stop every
process `reach up` started.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text

from shared.models import ContactStatus
from shared.settings import Settings
from tests.conftest import wait_for

DEMO_TIMEOUT_SECONDS = 120


def two_free_ports() -> int:
    """A port whose next port is free too (the simulator listens on PORT + 1)."""
    for _ in range(50):
        with socket.socket() as first:
            first.bind(("127.0.0.1", 0))
            port = first.getsockname()[1]
            with socket.socket() as second:
                try:
                    second.bind(("127.0.0.1", port + 1))
                except OSError:
                    continue
                return port
    raise RuntimeError("no two consecutive free ports")


def bare_environment(workdir: Path, port: int) -> dict[str, str]:
    """The environment of a machine where nothing is configured: no Reach setting, no redis-server."""
    settings_names = {name.upper() for name in Settings.model_fields} | {"REACH_VAR_DIR", "SIMULATOR_PORT"}
    env = {k: v for k, v in os.environ.items() if k.upper() not in settings_names}
    # REACH_HOME: the project is `workdir` (its var/ and .env), not this checkout.
    env.update(PATH=str(Path(sys.executable).parent), HOST="127.0.0.1", PORT=str(port), HOME=str(workdir))
    env["REACH_HOME"] = str(workdir)
    assert shutil.which("redis-server", path=env["PATH"]) is None
    return env


def descendants(pid: int) -> set[int]:
    """Every process below `pid`, from /proc (children live in sessions of their own)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    found, frontier = set(), {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def counts(rows: Any) -> Counter[str]:
    return Counter({str(key): int(n) for key, n in rows})


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.timeout(240)
def test_reach_up_demo_runs_embedded_and_stops_everything_on_ctrl_c(tmp_path: Path) -> None:
    port = two_free_ports()
    up = subprocess.Popen(
        [sys.executable, "-m", "reach_cli.main", "up", "--demo"],
        cwd=tmp_path,
        env=bare_environment(tmp_path, port),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(up.stdout.readline, "")), daemon=True)  # type: ignore[union-attr]
    reader.start()
    try:
        started = time.monotonic()
        wait_for(
            lambda: any("Reach keeps running" in line for line in lines) or up.poll() is not None,
            timeout=DEMO_TIMEOUT_SECONDS,
            interval=0.5,
            what="the demo to finish",
        )
        demo_seconds = time.monotonic() - started
        output = "".join(lines)
        assert up.poll() is None, output
        assert "the demo failed" not in output, output
        assert "NO AT CREDENTIALS: using the built-in simulator" in output
        assert "embedded (no Redis)" in output
        assert demo_seconds < 90, f"the demo took {demo_seconds:.0f}s\n{output}"

        database = tmp_path / "var" / "reach.sqlite3"
        assert database.exists() and (tmp_path / "var" / "broker.sqlite3").exists()
        engine = create_engine(f"sqlite:///{database}")
        with engine.connect() as connection:
            statuses = counts(connection.execute(text("SELECT status, count(*) FROM contacts GROUP BY status")))
            outcomes = counts(connection.execute(text("SELECT outcome, count(*) FROM calls GROUP BY outcome")))
            acknowledged = connection.execute(text("SELECT count(*) FROM calls WHERE acknowledged")).scalar_one()
            delivered = connection.execute(text("SELECT count(*) FROM messages WHERE status = 'Success'")).scalar_one()
            inbox_left = connection.execute(text("SELECT count(*) FROM inbox_entries")).scalar_one()
        engine.dispose()
        assert set(statuses) == {s.value for s in ContactStatus}, statuses
        assert outcomes["answered"] >= 2 and outcomes["retry_later"] >= 2, outcomes
        assert acknowledged == 1
        assert delivered >= 4
        assert inbox_left == 0  # every callback went through the embedded inbox and was applied

        children = descendants(up.pid)
        names = {Path(f"/proc/{pid}/cmdline").read_text().replace("\0", " ") for pid in children if alive(pid)}
        for expected in (["web.serve"], ["celery -A worker worker ", " --beat "], ["reach_cli.main simulator"]):
            assert any(all(part in name for part in expected) for name in names), (expected, names)
    finally:
        children = descendants(up.pid) if up.poll() is None else set()
        up.send_signal(signal.SIGINT)
        stop_started = time.monotonic()
        try:
            up.wait(60)
        except subprocess.TimeoutExpired:
            up.kill()
            raise
        finally:
            reader.join(5)
            up.stdout.close()  # type: ignore[union-attr]
    stop_seconds = time.monotonic() - stop_started
    assert up.returncode == 0, "".join(lines)
    left = {pid for pid in children if alive(pid)}
    assert not left, f"processes left running after Ctrl-C: {left}"
    assert "stopped" in "".join(lines[-3:])
    print(f"demo {demo_seconds:.1f}s, stop {stop_seconds:.1f}s")
