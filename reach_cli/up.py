"""`reach up`: run the whole system on this machine and stop it all cleanly on Ctrl-C.

Starts, as child processes: a Redis of its own when REDIS_URL is not set (under var/redis, AOF on),
the AT simulator when no AT credentials are set (announced plainly), the receiver (gunicorn) and a
Celery worker with embedded beat. Migrations run first. Missing tokens are generated once and kept in
var/ so the URLs printed at start keep working across restarts.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field

import click

from shared.settings import VAR_DIR, Settings

SIMULATOR_PORT_OFFSET = 1  # the simulator listens on PORT + 1
LOCAL_REDIS_PORT = 6390


@dataclass
class Stack:
    settings: Settings
    env: dict[str, str] = field(default_factory=lambda: dict(os.environ))
    children: list[tuple[str, subprocess.Popen[bytes]]] = field(default_factory=list)

    def start(self, name: str, command: list[str]) -> None:
        log = (VAR_DIR / f"{name}.log").open("ab")
        process = subprocess.Popen(command, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self.children.append((name, process))

    def stop(self) -> None:
        for _name, process in reversed(self.children):
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + 30
        for _name, process in reversed(self.children):
            try:
                process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)

    def watch(self) -> None:
        """Block until Ctrl-C or until a child dies (then say which, and where its log is)."""
        while True:
            for name, process in self.children:
                if process.poll() is not None:
                    click.echo(f"{name} exited ({process.returncode}); see {VAR_DIR / (name + '.log')}", err=True)
                    return
            time.sleep(0.5)


def _secret(name: str) -> str:
    """A token generated once for this machine and kept in var/ (never printed in logs)."""
    path = VAR_DIR / f"{name}.secret"
    if not path.exists():
        path.write_text(secrets.token_urlsafe(24))
        path.chmod(0o600)
    return path.read_text().strip()


def _port_open(host: str, port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.3)
        return sock.connect_ex((host, port)) == 0


def _wait_port(host: str, port: int, timeout: float = 20) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _port_open(host, port):
            return True
        time.sleep(0.2)
    return False


def plan(stack: Stack) -> None:
    """Fill in what is not configured: Redis, AT (the simulator) and tokens."""
    settings, env = stack.settings, stack.env
    env.setdefault("DATABASE_URL", settings.effective_database_url)
    if not settings.redis_url:
        binary = shutil.which("redis-server")
        if binary is None:
            raise click.ClickException("REDIS_URL is not set and redis-server is not installed")
        (VAR_DIR / "redis").mkdir(exist_ok=True)
        stack.start("redis", [binary, "--port", str(LOCAL_REDIS_PORT), "--bind", "127.0.0.1",
                              "--dir", str((VAR_DIR / "redis").resolve()), "--appendonly", "yes",
                              "--appendfsync", "always", "--maxmemory-policy", "noeviction"])  # fmt: skip
        env["REDIS_URL"] = f"redis://127.0.0.1:{LOCAL_REDIS_PORT}/0"
        if not _wait_port("127.0.0.1", LOCAL_REDIS_PORT):
            raise click.ClickException(f"redis-server did not start; see {VAR_DIR / 'redis.log'}")
    env.setdefault("WEBHOOK_TOKEN", settings.webhook_token.get_secret_value() or _secret("webhook-token"))
    env.setdefault("API_TOKEN", settings.api_token.get_secret_value() or _secret("api-token"))
    if not settings.uses_real_at:
        sim = f"http://127.0.0.1:{settings.port + SIMULATOR_PORT_OFFSET}"
        env.update(AT_USERNAME="sandbox", AT_API_KEY=_secret("simulator-key"), AT_SMS_URL=f"{sim}/version1",
                   AT_VOICE_URL=sim, AT_VOICE_NUMBER=settings.at_voice_number or "+254711082000")  # fmt: skip


def _interrupt(_signum: int, _frame: object) -> None:
    raise KeyboardInterrupt


def run_up(settings: Settings) -> None:
    VAR_DIR.mkdir(exist_ok=True)
    signal.signal(signal.SIGTERM, _interrupt)  # `kill` and supervisors stop the children too
    stack = Stack(settings)
    try:
        plan(stack)
        py = sys.executable
        subprocess.run([py, "-m", "reach_cli.main", "db", "upgrade"], env=stack.env, check=True)
        host, port = settings.host, settings.port
        receiver = f"http://{host}:{port}"
        if not settings.uses_real_at:
            stack.start("simulator", [py, "-m", "reach_cli.main", "simulator", "--host", "127.0.0.1",
                                      "--port", str(port + SIMULATOR_PORT_OFFSET), "--callback-url", receiver,
                                      "--api-key", stack.env["AT_API_KEY"]])  # fmt: skip
        stack.start("web", [py, "-m", "gunicorn", "--bind", f"{host}:{port}", "--workers", "2",
                            "--access-logfile", "-", "web:create_app()"])  # fmt: skip
        stack.start("worker", [py, "-m", "celery", "-A", "worker", "worker", "--beat", "--concurrency", "2",
                               "--schedule", str(VAR_DIR / "celerybeat-schedule"), "--loglevel", "INFO"])  # fmt: skip
        if not _wait_port(host, port):
            raise click.ClickException(f"the receiver did not start; see {VAR_DIR / 'web.log'}")
        announce(settings, stack.env, receiver)
        stack.watch()
    except KeyboardInterrupt:
        click.echo("\nstopping...")
    finally:
        stack.stop()
        click.echo("stopped")


def announce(settings: Settings, env: dict[str, str], receiver: str) -> None:
    echo = click.echo
    echo(f"Reach is up: receiver on {receiver}")
    database = env["DATABASE_URL"]
    echo(f"  database:   {'SQLite ' + database if database.startswith('sqlite') else 'PostgreSQL'}")
    echo(f"  broker:     {'a local redis-server under var/redis' if not settings.redis_url else 'REDIS_URL'}")
    if settings.uses_real_at:
        echo("  AT:         the real Africa's Talking API (AT_USERNAME is set)")
    else:
        echo(f"  AT:         NO AT CREDENTIALS: using the built-in simulator on {env['AT_VOICE_URL']}")
    echo(f"  operator API token: in {VAR_DIR / 'api-token.secret'} (or API_TOKEN)")
    echo(f"  logs:       {VAR_DIR}/*.log")
    echo("Press Ctrl-C to stop everything.")
