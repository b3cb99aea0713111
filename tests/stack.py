"""A whole Reach of its own for tests that break things: its own database, Redis, simulator, receiver
and worker processes, so killing them never touches the shared test stack (or the machine's services)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import redis
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker
from werkzeug.serving import make_server

from shared import migrate
from shared.db import build_engine
from shared.settings import load_settings
from simulator.app import SimulatorServer, run_simulator_in_thread
from simulator.scenario import Scenario
from tests.conftest import AT_API_KEY, ROOT, WEBHOOK_TOKEN, QuietHandler, free_port, wait_for


class Stack:
    def __init__(self, workdir: Path, database_url: str, scenario: Scenario, env: dict[str, str]) -> None:
        self.workdir = workdir
        self.database_url = database_url
        self.redis_port = free_port()
        self.redis_url = f"redis://127.0.0.1:{self.redis_port}/0"
        self.redis_process = self._start_redis()
        self.redis = redis.Redis(port=self.redis_port)
        self.receiver_port = free_port()
        self.receiver_url = f"http://127.0.0.1:{self.receiver_port}"
        self.simulator: SimulatorServer = run_simulator_in_thread(
            scenario,
            api_key=AT_API_KEY,
            callback_base_url=self.receiver_url,
            webhook_token=WEBHOOK_TOKEN,
        )
        self.env = {
            **os.environ,
            "DATABASE_URL": database_url,
            "REDIS_URL": self.redis_url,
            "AT_SMS_URL": f"{self.simulator.url}/version1",
            "AT_VOICE_URL": self.simulator.url,
            **env,
        }
        self._start_receiver()
        self.engine = build_engine(database_url)
        self.sessions = sessionmaker(self.engine, expire_on_commit=False)
        self.workers: list[subprocess.Popen[bytes]] = []
        self.logs: list[Any] = []

    def _start_redis(self) -> subprocess.Popen[bytes]:
        binary = shutil.which("redis-server") or "redis-server"
        process = subprocess.Popen(
            [binary, "--port", str(self.redis_port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(self.workdir)],
            stdout=subprocess.DEVNULL,
        )  # fmt: skip
        client = redis.Redis(port=self.redis_port)
        wait_for(lambda: _pings(client), timeout=10, what="stack redis")
        client.close()
        return process

    def _start_receiver(self) -> None:
        from web import create_app

        settings = load_settings(database_url=self.database_url, redis_url=self.redis_url)
        self.app = create_app(settings)
        self.server = make_server(
            "127.0.0.1", self.receiver_port, self.app, threaded=True, request_handler=QuietHandler
        )
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def start_worker(self, name: str) -> subprocess.Popen[bytes]:
        log = open(self.workdir / f"{name}.log", "ab")  # noqa: SIM115 - closed in stop()
        self.logs.append(log)
        command = [
            sys.executable, "-m", "celery", "-A", "worker", "worker", "--beat", "--concurrency", "2",
            "--schedule", str(self.workdir / f"{name}-beat"), "--without-gossip", "--without-mingle",
            "--loglevel", "INFO", "--hostname", f"{name}@%h",
        ]  # fmt: skip
        process = subprocess.Popen(
            command, cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        self.workers.append(process)
        log_path = self.workdir / f"{name}.log"
        wait_for(lambda: b"ready." in log_path.read_bytes() or process.poll() is not None, timeout=60)
        assert process.poll() is None, log_path.read_text()[-3000:]
        return process

    def kill(self, process: subprocess.Popen[bytes]) -> None:
        """SIGKILL the worker's whole process group: no warm shutdown, no acknowledgements."""
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(10)

    def session(self) -> Session:
        return self.sessions()

    def log(self, name: str) -> str:
        return (self.workdir / f"{name}.log").read_text(errors="replace")

    def stop(self) -> None:
        for process in self.workers:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in self.workers:
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
        for log in self.logs:
            log.close()
        self.server.shutdown()
        self.app.extensions["reach"].close()
        self.simulator.stop()
        self.engine.dispose()
        self.redis.close()
        self.redis_process.terminate()
        self.redis_process.wait(10)


def _pings(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.ConnectionError:
        return False


@contextmanager
def isolated_stack(workdir: Path, base_database_url: str, scenario: Scenario, **env: Any) -> Iterator[Stack]:
    """A fresh database (migrated) and a whole stack on it; everything is removed afterwards."""
    url = make_url(base_database_url)
    url = url.set(database=f"{url.database}_stack")
    admin = create_engine(url.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'DROP DATABASE IF EXISTS "{url.database}" WITH (FORCE)'))
        connection.execute(text(f'CREATE DATABASE "{url.database}"'))
    rendered = url.render_as_string(hide_password=False)
    migrate.upgrade(rendered)
    stack = Stack(workdir, rendered, scenario, {k.upper(): str(v) for k, v in env.items()})
    try:
        yield stack
    finally:
        stack.stop()
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{url.database}" WITH (FORCE)'))
        admin.dispose()
