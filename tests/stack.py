"""A whole Reach of its own for tests that break things: its own database, Redis, simulator, receiver
and worker processes, so killing them never touches the shared test stack (or the machine's services)."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import redis
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker
from werkzeug.serving import make_server

from shared import migrate
from shared.db import build_engine, normalise_url
from shared.settings import load_settings
from simulator.app import SimulatorServer, run_simulator_in_thread
from simulator.scenario import Scenario
from tests.conftest import AT_API_KEY, WEBHOOK_TOKEN, QuietHandler
from tests.services import (
    PostgresServer,
    RedisServer,
    WorkerProcess,
    free_port,
    fresh_database,
    postgres_server,
    private_redis,
    redis_server,
)

#: What production Redis runs with (RELIABILITY.md): every write on disk before Redis answers it.
DURABLE_REDIS = ("--appendonly", "yes", "--appendfsync", "always")


class Stack:
    def __init__(
        self, workdir: Path, database_url: str, redis_port: int, scenario: Scenario, env: dict[str, str]
    ) -> None:
        self.workdir = workdir
        self.database_url = database_url
        self.redis_port = redis_port
        self.redis_url = f"redis://127.0.0.1:{self.redis_port}/0"
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
        self.workers: list[WorkerProcess] = []
        #: Set by `fault_stack`: the servers themselves, for tests that stop, kill and restart them.
        self.postgres: PostgresServer | None = None
        self.redis_server: RedisServer | None = None

    def _start_receiver(self) -> None:
        from web import create_app

        settings = load_settings(database_url=self.database_url, redis_url=self.redis_url)
        self.app = create_app(settings)
        self.server = make_server(
            "127.0.0.1", self.receiver_port, self.app, threaded=True, request_handler=QuietHandler
        )
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def start_worker(self, name: str, **options: Any) -> WorkerProcess:
        self.workers.append(WorkerProcess(self.workdir, name, self.env, **options))
        return self.workers[-1]

    def session(self) -> Session:
        return self.sessions()

    def stop(self) -> None:
        for process in self.workers:
            process.stop()
        self.server.shutdown()
        self.app.extensions["reach"].close()
        self.simulator.stop()
        self.engine.dispose()
        self.redis.close()


@contextmanager
def isolated_stack(workdir: Path, base_database_url: str, scenario: Scenario, **env: Any) -> Iterator[Stack]:
    """A fresh database (migrated), a private Redis and a whole stack on them; all removed afterwards."""
    url = make_url(base_database_url)
    stack_db = url.set(database=f"{url.database}_stack").render_as_string(hide_password=False)
    with fresh_database(stack_db) as database_url, private_redis(workdir) as redis_port:
        stack = Stack(workdir, database_url, redis_port, scenario, {k.upper(): str(v) for k, v in env.items()})
        try:
            yield stack
        finally:
            stack.stop()


@contextmanager
def fault_stack(workdir: Path, scenario: Scenario, **env: Any) -> Iterator[Stack]:
    """A whole stack on a PostgreSQL cluster and a Redis (AOF, fsync always) of its own, so a test may
    stop, crash and restart them; `stack.postgres` and `stack.redis_server` are the handles."""
    with postgres_server() as postgres, redis_server(workdir, *DURABLE_REDIS) as redis_handle:
        database_url = normalise_url(postgres.url())  # the cluster is the test's own and removed afterwards
        migrate.upgrade(database_url)
        stack = Stack(workdir, database_url, redis_handle.port, scenario, {k.upper(): str(v) for k, v in env.items()})
        stack.postgres, stack.redis_server = postgres, redis_handle
        try:
            yield stack
        finally:
            stack.stop()
