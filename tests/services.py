"""Private Postgres databases and Redis servers for tests, created fresh and removed afterwards."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import redis
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from shared import migrate

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def fresh_database(url: str) -> Iterator[str]:
    """Create the database `url` names (dropping a leftover one), migrate it, drop it afterwards."""
    parsed = make_url(url).set(drivername="postgresql+psycopg")
    admin = create_engine(parsed.set(database="postgres"), isolation_level="AUTOCOMMIT")
    drop = text(f'DROP DATABASE IF EXISTS "{parsed.database}" WITH (FORCE)')
    with admin.connect() as connection:
        connection.execute(drop)
        connection.execute(text(f'CREATE DATABASE "{parsed.database}"'))
    rendered = parsed.render_as_string(hide_password=False)
    try:
        migrate.upgrade(rendered)
        yield rendered
    finally:
        with admin.connect() as connection:
            connection.execute(drop)
        admin.dispose()


@contextmanager
def private_redis(workdir: Path, *extra: str) -> Iterator[int]:
    """A redis-server of our own on a free port (no persistence unless `extra` asks); yields the port."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("redis-server is not installed (apt-get install redis-server)")
    port = free_port()
    process = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", str(workdir), "--maxmemory-policy", "noeviction", *extra],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )  # fmt: skip
    password = extra[extra.index("--requirepass") + 1] if "--requirepass" in extra else None
    client = redis.Redis(port=port, password=password)
    try:
        deadline = time.monotonic() + 10
        while not _pings(client):
            if time.monotonic() > deadline or process.poll() is not None:
                raise RuntimeError(f"redis-server did not start on port {port}")
            time.sleep(0.05)
        yield port
    finally:
        client.close()
        process.terminate()
        process.wait(10)


def _pings(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.ConnectionError:
        return False


class WorkerProcess:
    """`celery -A worker worker --beat` (prefork, 2 processes) in its own process group, logging to a file."""

    def __init__(self, workdir: Path, name: str, env: dict[str, str] | None = None) -> None:
        self.log_path = workdir / f"{name}.log"
        self._log = self.log_path.open("ab")
        command = [
            sys.executable, "-m", "celery", "-A", "worker", "worker", "--beat", "--concurrency", "2",
            "--schedule", str(workdir / f"{name}-beat"), "--without-gossip", "--without-mingle",
            "--loglevel", "INFO", "--hostname", f"{name}@%h",
        ]  # fmt: skip
        self.process = subprocess.Popen(
            command, cwd=ROOT, env=env, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True
        )
        deadline = time.monotonic() + 60
        while b"ready." not in self.log_path.read_bytes():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"worker {name} did not start:\n{self.log()[-4000:]}")
            time.sleep(0.1)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def kill(self) -> None:
        """SIGKILL the whole process group: no warm shutdown, nothing acknowledged."""
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(10)
        self._log.close()

    def stop(self) -> None:
        """Warm shutdown (SIGTERM), then SIGKILL if it takes longer than 20 s."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(5)
        self._log.close()
