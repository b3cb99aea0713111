"""`reach up`: run the whole system on this machine and stop it all cleanly on Ctrl-C.

Starts, as child processes: the AT simulator when no AT credentials are set (announced plainly), the
receiver (granian: `python -m web.serve`) and a Celery worker with embedded beat. Migrations run first. With
no DATABASE_URL and no REDIS_URL everything is embedded under var/ (or REACH_VAR_DIR): the database in
`reach.sqlite3`, Celery's broker in `broker.sqlite3` (kombu's SQLAlchemy transport), the callback inbox
and caches in the database (`shared.store`); nothing else needs installing. Missing tokens (webhook, API, metrics) are
generated once and kept in var/ so the URLs printed at start keep working across restarts.

`--demo` then runs `reach demo` against this stack (sample contacts, two cycles, a summary).

Nothing outlives `reach up` (reach_cli/lifetime.py): each child gets SIGTERM when it dies, however it dies
(SIGKILL, the OOM killer), and stops its own workers as on Ctrl-C; one `reach up` at a time holds var/.
A worker that stops by itself is started again, as compose's restart policy does (`Restarts`); any other
child that stops ends `reach up`.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections import deque
from dataclasses import dataclass, field

import click

from reach_cli import lifetime, processes
from reach_cli.common import EXIT_FAILED, echo, fail
from shared.settings import VAR_DIR, Settings

SIMULATOR_PORT_OFFSET = 1  # the simulator listens on PORT + 1 when that is free
#: The demo's calls retry a busy or unanswered customer once, a few seconds later (instead of minutes).
DEMO_SETTINGS = {"CALL_RETRIES": "1", "CALL_RETRY_DELAY_SECONDS": "3"}


#: The children started again when they stop by themselves: a worker stopped by an error it cannot recover from
#: (kombu 5.7 stopped one that lost Redis with a task in flight, shared/kombu_fix.py) while the receiver runs on.
RESTARTED = frozenset({"worker"})


@dataclass
class Restarts:
    """Starting a child again, but not endlessly: one that stopped `limit` times within `window_seconds` (a
    setting it refuses, a broker it cannot reach at start) ends `reach up`, which says where its log is."""

    limit: int = 5
    window_seconds: float = 60.0
    times: deque[float] = field(default_factory=deque)

    def allow(self) -> bool:
        now = time.monotonic()
        while self.times and now - self.times[0] > self.window_seconds:
            self.times.popleft()
        if len(self.times) >= self.limit:
            return False
        self.times.append(now)
        return True


@dataclass
class Stack:
    settings: Settings
    env: dict[str, str] = field(default_factory=lambda: dict(os.environ))
    children: list[tuple[str, subprocess.Popen[bytes]]] = field(default_factory=list)
    simulator_port: int = 0
    #: The simulator's listening socket, bound here and inherited by the child (`reach simulator --fd`).
    simulator_socket: socket.socket | None = None
    #: The lock on var/ (lifetime.hold_var): every child inherits it, so var/ stays held until they all ended.
    var_lock: int = -1
    #: The command line of each child `RESTARTED` names, to start it again.
    commands: dict[str, list[str]] = field(default_factory=dict)
    restarts: Restarts = field(default_factory=Restarts)

    def start(self, name: str, command: list[str], *, fds: tuple[int, ...] = ()) -> None:
        self.children.append((name, self._spawn(name, command, fds)))
        if name in RESTARTED:
            self.commands[name] = command

    def _spawn(self, name: str, command: list[str], fds: tuple[int, ...] = ()) -> subprocess.Popen[bytes]:
        log = (VAR_DIR / f"{name}.log").open("ab")
        inherited = ((self.var_lock,) if self.var_lock >= 0 else ()) + fds
        return subprocess.Popen(
            command, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            preexec_fn=lifetime.end_with_parent(), pass_fds=inherited,
        )  # fmt: skip

    def wait_port(self, name: str, host: str, port: int, timeout: float = 30) -> None:
        """Until `name` listens on `port`; fail (exit 1) if any child exits meanwhile or it never does."""
        deadline = time.monotonic() + timeout
        while not _port_open(host, port):
            for child, process in self.children:
                if process.poll() is not None:
                    fail(f"{child} exited during start-up ({process.returncode}); see {VAR_DIR / (child + '.log')}")
            if time.monotonic() > deadline:
                fail(f"the {name} did not start listening on {host}:{port}; see {VAR_DIR / (name + '.log')}")
            time.sleep(0.2)

    def stop(self) -> None:
        """SIGTERM each child's main process (Celery and granian then stop their own workers in order;
        signalling the whole group would kill pool workers under a warm shutdown, which then waits for
        them), then SIGKILL whatever is left in each child's process group, so nothing outlives us."""
        for _name, process in reversed(self.children):
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 30
        for _name, process in reversed(self.children):
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(max(0.1, deadline - time.monotonic()))
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)  # the group outlives its leader only if orphans remain
            process.wait()

    def run_demo(self, command: list[str]) -> None:
        """Run the demo in the foreground (its output on this terminal); the stack stays up afterwards."""
        demo = subprocess.Popen(command, env=self.env, start_new_session=True, preexec_fn=lifetime.end_with_parent())
        self.children.append(("demo", demo))
        if demo.wait() != 0:
            echo(f"the demo failed (exit {demo.returncode}); the logs are in {VAR_DIR}", err=True)
        self.children.remove(("demo", demo))
        echo("Reach keeps running; press Ctrl-C to stop everything.")

    def watch(self) -> None:
        """Block until Ctrl-C or until a child dies (then say which, and where its log is); a child `RESTARTED`
        names is started again instead, unless it keeps dying (`Restarts`)."""
        while True:
            for index, (name, process) in enumerate(self.children):
                if process.poll() is not None:
                    echo(f"{name} exited ({process.returncode}); see {VAR_DIR / (name + '.log')}", err=True)
                    if name not in self.commands or not self.restarts.allow():
                        return
                    self.children[index] = (name, self._restart(name, process))
            time.sleep(0.5)

    def _restart(self, name: str, dead: subprocess.Popen[bytes]) -> subprocess.Popen[bytes]:
        # Whatever the dead one left in its process group (pool processes, embedded beat) goes first: two
        # beats would send every schedule twice.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(dead.pid, signal.SIGKILL)
        echo(f"starting the {name} again", err=True)
        return self._spawn(name, self.commands[name])


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


def _bind_error(host: str, port: int) -> str | None:
    """Why `host:port` cannot be listened on (taken, not ours to bind), or None when it can."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as gunicorn binds: TIME_WAIT is no obstacle
        try:
            sock.bind((host, port))
        except OSError as exc:
            return exc.strerror or str(exc)
    return None


def _simulator_socket(port: int) -> socket.socket:
    """A listening socket on PORT + 1, the address people come to know, unless something else holds it: then
    on any free port (the workers learn it from AT_SMS_URL / AT_VOICE_URL, so nothing else depends on the
    number). Bound here and inherited by the simulator, so no other program can take it before the child
    starts (on a busy machine one did, between a check that the port was free and the child's own bind)."""
    listening = socket.socket()
    try:
        listening.bind(("127.0.0.1", port + SIMULATOR_PORT_OFFSET))
    except OSError:
        listening.close()
        listening = socket.socket()
        listening.bind(("127.0.0.1", 0))
    listening.listen(128)
    return listening


def plan(stack: Stack) -> None:
    """Fill in what is not configured: the embedded broker, AT (the simulator) and tokens."""
    from shared.broker import prepare_embedded_broker

    settings, env = stack.settings, stack.env
    env.setdefault("DATABASE_URL", settings.effective_database_url)
    # The receiver's processes pool their /metrics counts here (web/serve.py empties it at start).
    env.setdefault("PROMETHEUS_MULTIPROC_DIR", str((VAR_DIR / "prometheus").resolve()))
    if not settings.uses_redis:
        prepare_embedded_broker(settings.effective_broker_url)
    env.setdefault("WEBHOOK_TOKEN", settings.webhook_token.get_secret_value() or _secret("webhook-token"))
    env.setdefault("API_TOKEN", settings.api_token.get_secret_value() or _secret("api-token"))
    env.setdefault("METRICS_TOKEN", settings.metrics_token.get_secret_value() or _secret("metrics-token"))
    if not settings.uses_real_at:
        stack.simulator_socket = _simulator_socket(settings.port)
        stack.simulator_port = stack.simulator_socket.getsockname()[1]
        sim = f"http://127.0.0.1:{stack.simulator_port}"
        env.update(AT_USERNAME="sandbox", AT_API_KEY=_secret("simulator-key"), AT_SMS_URL=f"{sim}/version1",
                   AT_VOICE_URL=sim, AT_VOICE_NUMBER=settings.at_voice_number or "+254711082000")  # fmt: skip


def _interrupt(_signum: int, _frame: object) -> None:
    raise KeyboardInterrupt


def run_up(settings: Settings, *, demo: bool = False, demo_scenario: str | None = None) -> None:
    VAR_DIR.mkdir(parents=True, exist_ok=True)
    var_lock = lifetime.hold_var(VAR_DIR)
    taken = _bind_error(settings.host, settings.port)
    if taken:
        fail(f"cannot listen on {settings.host}:{settings.port} ({taken}); stop what holds it or set PORT", EXIT_FAILED)
    # `kill` and supervisors stop the children too; SIGINT explicitly, as a shell may start us with it ignored.
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, _interrupt)
    stack = Stack(settings, var_lock=var_lock.fileno())
    try:
        if demo:
            if settings.uses_real_at:
                raise click.ClickException("--demo runs on the simulator only; unset AT_USERNAME / AT_API_KEY")
            for name, value in DEMO_SETTINGS.items():
                stack.env.setdefault(name, value)
        plan(stack)
        py = sys.executable
        subprocess.run([py, "-m", "reach_cli.main", *processes.MIGRATE[1:]], env=stack.env, check=True)
        host, port = settings.host, settings.port
        receiver = f"http://{host}:{port}"
        if not settings.uses_real_at:
            # Its key and webhook token come from the environment (AT_API_KEY, WEBHOOK_TOKEN), as every
            # child's secrets do: a command line is visible to every user of the machine (`ps`).
            scenario = ["--scenario", demo_scenario] if demo_scenario else []
            assert stack.simulator_socket is not None
            fd = stack.simulator_socket.fileno()
            stack.start("simulator", [py, "-m", "reach_cli.main", "simulator", "--host", "127.0.0.1",
                                      "--port", str(stack.simulator_port), "--fd", str(fd),
                                      "--callback-url", receiver, *scenario], fds=(fd,))  # fmt: skip
            stack.simulator_socket.close()  # the child's copy serves
        stack.start("web", [py, "-m", *processes.receiver(f"{host}:{port}")])
        beat = ("--beat", "--schedule", str(VAR_DIR / "celerybeat-schedule"))
        stack.start("worker", [py, "-m", *processes.worker(processes.ALL_QUEUES, *beat)])
        if not settings.uses_real_at:
            stack.wait_port("simulator", "127.0.0.1", stack.simulator_port)
        stack.wait_port("web", host, port)
        announce(settings, stack.env, receiver)
        if demo:
            stack.run_demo([py, "-m", "reach_cli.main", "demo"])
        stack.watch()
    except KeyboardInterrupt:
        echo()
        echo("stopping...")
        code = 0
    else:
        code = EXIT_FAILED  # a child died (watch said which): a supervisor must see a failure, not a clean stop
    finally:
        stack.stop()
        echo("stopped")
    sys.exit(code)


def announce(settings: Settings, env: dict[str, str], receiver: str) -> None:
    database = env["DATABASE_URL"]
    echo(f"Reach is up: receiver on {receiver}")
    echo(
        f"  AT callbacks:  {receiver}/dlr, /receiveSMS, /voice, /ussd (?token= from {VAR_DIR / 'webhook-token.secret'})"
    )
    echo(f"  operator API:  {receiver}/api (Bearer token in {VAR_DIR / 'api-token.secret'}, or API_TOKEN)")
    echo(f"  health:        {receiver}/healthz, {receiver}/readyz")
    echo(f"  metrics:       {receiver}/metrics (Bearer token in {VAR_DIR / 'metrics-token.secret'}, or METRICS_TOKEN)")
    echo(f"  dashboard:     {receiver}/dashboard (sign in with the operator API token)")
    if database.startswith("sqlite"):
        echo(f"  database:      SQLite file {database.removeprefix('sqlite:///')}")
    else:
        echo("  database:      PostgreSQL (DATABASE_URL)")
    if settings.uses_redis:
        echo("  broker, inbox: Redis (REDIS_URL)")
    else:
        broker = settings.effective_broker_url.removeprefix("sqla+sqlite:///")
        echo(f"  broker:        embedded (no Redis): SQLite file {broker}; callback inbox in the database")
    if settings.uses_real_at:
        echo("  AT:            the real Africa's Talking API (AT_USERNAME is set)")
    else:
        echo(f"  AT:            NO AT CREDENTIALS: using the built-in simulator on {env['AT_VOICE_URL']}")
    logs = ["web", "worker"] + ([] if settings.uses_real_at else ["simulator"])
    echo(f"  logs:          {', '.join(str(VAR_DIR / (name + '.log')) for name in logs)}")
    echo("Press Ctrl-C to stop everything.")
