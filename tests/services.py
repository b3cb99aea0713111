"""Private Postgres databases and Redis servers for tests, created fresh and removed afterwards."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
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


class RedisServer:
    """A redis-server of our own on a free port and directory: tests may kill it and start it again there
    (with `--appendonly yes` it then reloads what it had acknowledged)."""

    def __init__(self, workdir: Path, *extra: str) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed (apt-get install redis-server)")
        self.port = free_port()
        self.password = extra[extra.index("--requirepass") + 1] if "--requirepass" in extra else None
        auth = f":{self.password}@" if self.password else ""
        self.url = f"redis://{auth}127.0.0.1:{self.port}/0"
        self.log_path = workdir / f"redis-{self.port}.log"
        self.command = [
            binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
            "--dir", str(workdir), "--maxmemory-policy", "noeviction", "--logfile", str(self.log_path), *extra,
        ]  # fmt: skip
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(self.command, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        client = redis.Redis(port=self.port, password=self.password)
        try:
            deadline = time.monotonic() + 10
            while not _pings(client):
                if time.monotonic() > deadline or self.process.poll() is not None:
                    raise RuntimeError(f"redis-server did not start on port {self.port}")
                time.sleep(0.05)
        finally:
            client.close()

    def kill(self) -> None:
        """SIGKILL: no shutdown save, no goodbye to clients; only what is on disk survives."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)


@contextmanager
def private_redis(workdir: Path, *extra: str) -> Iterator[int]:
    """A redis-server of our own on a free port (no persistence unless `extra` asks); yields the port."""
    with redis_server(workdir, *extra) as server:
        yield server.port


@contextmanager
def redis_server(workdir: Path, *extra: str) -> Iterator[RedisServer]:
    server = RedisServer(workdir, *extra)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def _pings(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.ConnectionError:
        return False


class PostgresServer:
    """A PostgreSQL cluster of our own (`initdb` in a temporary directory) on a free port, which tests may
    stop, crash and start again without touching the machine's server.

    PostgreSQL refuses to run as root, so when the tests do, the cluster runs as the `postgres` user in a
    directory of its own under the system temp dir (pytest's are private to root).
    """

    def __init__(self) -> None:
        self.bin = _postgres_bin()
        self.port = free_port()
        self.user = "postgres" if os.geteuid() == 0 else None
        self.root = Path(tempfile.mkdtemp(prefix="reach-pg-"))
        if self.user:
            shutil.chown(self.root, self.user)
        self.data = self.root / "data"
        self.log_path = self.root / "postgres.log"
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "-A", "trust", "-E", "UTF8", "--no-sync")

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def start(self) -> None:
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1"
        self._run("pg_ctl", "-D", str(self.data), "-o", options, "-l", str(self.log_path), "-w", "-t", "60", "start")

    def stop(self, mode: str = "fast") -> None:
        """`fast`: a clean shutdown; `immediate`: a crash (no checkpoint; recovery from WAL at the next start)."""
        if (self.data / "postmaster.pid").exists():
            self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop")

    def remove(self) -> None:
        self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)

    def _run(self, program: str, *args: str) -> None:
        result = subprocess.run(
            [str(self.bin / program), *args], user=self.user, cwd=self.root, capture_output=True, text=True
        )
        if result.returncode != 0:
            raise RuntimeError(f"{program} failed: {result.stdout}{result.stderr}")


def _postgres_bin() -> Path:
    """The newest installed server's programs (Debian keeps them out of PATH), else whatever PATH has."""
    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=lambda p: int(p.parent.name))
    if candidates:
        return candidates[-1]
    found = shutil.which("pg_ctl")
    if found is None:
        raise RuntimeError("PostgreSQL server programs (initdb, pg_ctl) are not installed")
    return Path(found).parent


@contextmanager
def postgres_server() -> Iterator[PostgresServer]:
    server = PostgresServer()
    try:
        server.start()
        yield server
    finally:
        server.remove()


def command_env(**overrides: str) -> dict[str, str]:
    """The test session's environment, with this virtualenv's scripts (`reach`, `gunicorn`) on PATH."""
    bin_dir = str(Path(sys.executable).parent)
    return {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}", **overrides}


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
        cwd: Path = ROOT,
    ) -> None:
        self.name, self.ready = name, ready
        self.log_path = workdir / f"{name}.log"
        self._log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", *command],
            cwd=cwd,
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
    """`celery -A worker worker` on every queue with 2 processes and embedded beat (what `reach up` runs);
    `profile` for one of the production workers (no beat), `beat=False` for a worker without beat, `app` for
    a test's own Celery app built on the worker's, `cwd` for another checkout's code (bench.e2e --compare)."""

    def __init__(
        self,
        workdir: Path,
        name: str,
        env: dict[str, str] | None = None,
        profile: processes.WorkerProfile | None = None,
        wait: bool = True,
        *,
        app: str = "worker",
        beat: bool = True,
        cwd: Path = ROOT,
    ) -> None:
        extra = ["--hostname", f"{name}@%h"]
        if profile is None:
            profile = processes.ALL_QUEUES
            if beat:
                extra += ["--beat", "--schedule", str(workdir / f"{name}-beat")]
        super().__init__(workdir, name, processes.worker(profile, *extra, app=app), env, wait=wait, cwd=cwd)


class BeatProcess(ServiceProcess):
    """`celery -A worker beat` on its own: the scheduler alone, as a second host would run it."""

    def __init__(self, workdir: Path, name: str, env: dict[str, str] | None = None, *, app: str = "worker") -> None:
        command = processes.beat(str(workdir / f"{name}-beat"), app=app)
        super().__init__(workdir, name, command, env, ready=b"beat: Starting")


def reset_cached_clients() -> None:
    """Forget this process's cached settings, engine, Redis client and AT client, so the next use reads the
    environment again; pooled connections are closed, not left to the garbage collector, which would find
    them open during a later test and fail it with a ResourceWarning."""
    from shared import at_client, broker, db
    from shared.settings import get_settings

    if db.get_engine.cache_info().currsize:
        db.get_engine().dispose()
    if broker.get_redis.cache_info().currsize:
        broker.get_redis().close()
    get_settings.cache_clear()
    db.get_engine.cache_clear()
    db._session_factory.cache_clear()
    broker.get_redis.cache_clear()
    at_client.reset_at_client()
