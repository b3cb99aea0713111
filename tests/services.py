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

from reach_cli import processes
from shared import migrate

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def fresh_database(url: str, migrated: bool = True) -> Iterator[str]:
    """Create the database `url` names (dropping a leftover one), migrate it unless `migrated` is false,
    drop it afterwards."""
    parsed = make_url(url).set(drivername="postgresql+psycopg")
    admin = create_engine(parsed.set(database="postgres"), isolation_level="AUTOCOMMIT")
    drop = text(f'DROP DATABASE IF EXISTS "{parsed.database}" WITH (FORCE)')
    with admin.connect() as connection:
        connection.execute(drop)
        connection.execute(text(f'CREATE DATABASE "{parsed.database}"'))
    rendered = parsed.render_as_string(hide_password=False)
    try:
        if migrated:
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
    client = redis.Redis(port=port)
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


class ServiceProcess:
    """`python -m <command>` (a command line of reach_cli/processes.py) in its own process group, logging to
    a file. Unless `wait` is false, returns once `ready` shows in the log (`wait_ready` does it later)."""

    def __init__(
        self,
        workdir: Path,
        name: str,
        command: list[str],
        env: dict[str, str] | None = None,
        ready: bytes = b"ready.",
        wait: bool = True,
    ) -> None:
        self.name, self.ready = name, ready
        self.log_path = workdir / f"{name}.log"
        self._log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", *command],
            cwd=ROOT,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        if wait:
            self.wait_ready()

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while self.ready not in self.log_path.read_bytes():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"{self.name} did not start:\n{self.log()[-4000:]}")
            time.sleep(0.1)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def kill(self) -> None:
        """SIGKILL the whole process group: no warm shutdown, nothing acknowledged."""
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(10)
        self._log.close()

    def stop(self) -> None:
        """Warm shutdown (SIGTERM to the main process, so pool children finish their tasks), then SIGKILL to
        the whole group if it takes longer than 20 s."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(5)
        self._log.close()


class WorkerProcess(ServiceProcess):
    """`celery -A worker worker --beat` on every queue with 2 processes (what `reach up` runs), or with
    `profile` and no beat, one of the production workers."""

    def __init__(
        self,
        workdir: Path,
        name: str,
        env: dict[str, str] | None = None,
        profile: processes.WorkerProfile | None = None,
        wait: bool = True,
    ) -> None:
        extra = ["--hostname", f"{name}@%h"]
        if profile is None:
            profile = processes.ALL_QUEUES
            extra += ["--beat", "--schedule", str(workdir / f"{name}-beat")]
        super().__init__(workdir, name, processes.worker(profile, *extra), env, wait=wait)
