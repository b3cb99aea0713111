"""Test fixtures: a real Postgres database, a private Redis, the real receiver, simulator and worker.

- Postgres: the machine's server (TEST_DATABASE_URL, default postgres@127.0.0.1:5432), a database of
  our own created and migrated once per session; tables are emptied between tests.
- Redis: a private `redis-server` on a free port in a temporary directory, so tests may delete keys
  and later fault tests may kill it without touching the shared one.
- The receiver (the real Flask app on a real HTTP server), the AT simulator and a Celery worker
  subprocess (with embedded beat) are session fixtures, started only by tests that ask for them.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis as redis_lib
from sqlalchemy import Engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError
from werkzeug.serving import WSGIRequestHandler, make_server

from shared import broker, db
from shared.models import Base
from shared.settings import Settings, load_settings
from tests.services import WorkerProcess, free_port, fresh_database, private_redis, reset_cached_clients

FIXTURES = Path(__file__).resolve().parent / "fixtures"

API_TOKEN = "test-operator-token-0123456789"
SECOND_API_TOKEN = "test-rotated-token-9876543210"
WEBHOOK_TOKEN = "test-webhook-token-abcdef"
AT_API_KEY = "test-at-api-key-5f2d9c"
AT_VOICE_NUMBER = "+254711082000"
#: Passwords in the session's DATABASE_URL and REDIS_URL (Postgres trusts local users and ignores it; our
#: private Redis requires it), so the log check below has URL passwords to look for.
DATABASE_PASSWORD = "test-db-password-4e1a7c"
REDIS_PASSWORD = "test-redis-password-93b0d2"

# leak_check fails the run if any of these secrets shows up in a log record or a subprocess log;
# cli_support and operator_api_support have the fixtures of tests/test_cli*.py and tests/test_operator_api*.py;
# browser has the headless Chromium ones (tests/test_dashboard_browser.py).
pytest_plugins = ("tests.leak_check", "tests.cli_support", "tests.operator_api_support", "tests.browser")
METRICS_TOKEN = "test-metrics-token-0123456789"


def wait_for(condition: Callable[[], Any], timeout: float = 20.0, interval: float = 0.05, what: str = "") -> Any:
    """Poll `condition` until it returns something truthy; fail the test after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or condition}")
        time.sleep(interval)


# -- services -----------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with private_redis(tmp_path_factory.mktemp("redis"), "--requirepass", REDIS_PASSWORD) as port:
        yield f"redis://:{REDIS_PASSWORD}@127.0.0.1:{port}/0"


@pytest.fixture(scope="session")
def database_url() -> Iterator[str]:
    """A fresh database of this run's own (runs on one machine may overlap), dropped at the end."""
    base = make_url(os.environ.get("TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/reach_test"))
    base = base.set(password=base.password or DATABASE_PASSWORD)
    with fresh_database(base.set(database=f"{base.database}_{os.getpid()}").render_as_string(False)) as url:
        yield url


@pytest.fixture(scope="session")
def simulator(receiver: str) -> Iterator[Any]:
    """The AT simulator on the port the settings point the SDK at, posting callbacks to the receiver."""
    from simulator.app import run_simulator_in_thread
    from simulator.scenario import Scenario

    handle = run_simulator_in_thread(
        Scenario.from_dict({}),
        api_key=AT_API_KEY,
        username="sandbox",
        callback_base_url=receiver,
        webhook_token=WEBHOOK_TOKEN,
        port=int(os.environ["SIMULATOR_PORT"]),
    )
    yield handle
    handle.stop()


@pytest.fixture(scope="session", autouse=True)
def environment(database_url: str, redis_url: str) -> Iterator[None]:
    """Settings every process of the test session sees (the worker subprocess inherits them)."""
    sim_port = free_port()  # the simulator fixture binds it on demand; the worker needs the URL now
    values = {
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "API_TOKEN": f"{API_TOKEN},{SECOND_API_TOKEN}",
        "WEBHOOK_TOKEN": WEBHOOK_TOKEN,
        "METRICS_TOKEN": METRICS_TOKEN,
        "AT_USERNAME": "sandbox",
        "AT_API_KEY": AT_API_KEY,
        "AT_VOICE_NUMBER": AT_VOICE_NUMBER,
        "AT_SMS_URL": f"http://127.0.0.1:{sim_port}/version1",
        "AT_VOICE_URL": f"http://127.0.0.1:{sim_port}",
        "AT_TIMEOUT_READ": "3",
        # Cycles in tests: one call per contact per cycle, schedules looked at every second, housekeeping
        # every 2 s, and interrupted sends resent 2 s after their lease (the lease is at least 16 s: see
        # Settings).
        "CALL_RETRIES": "0",
        # Calls at any hour, so no test depends on the time of day it runs at; tests/test_send_windows.py sets
        # each cycle's windows (and tests/test_settings.py checks the defaults).
        "CALL_WINDOW": "always",
        "SCHEDULE_TICK_SECONDS": "1",
        # Tests run every-minute schedules (a simulated minute lasts seconds); tests/test_schedules.py checks
        # the default (an hour) refuses them.
        "SCHEDULE_MIN_INTERVAL_SECONDS": "60",
        "HOUSEKEEPING_SECONDS": "2",
        "UNKNOWN_SEND_GRACE_SECONDS": "2",
        "DISPATCH_LEASE_SECONDS": "1",
        "SIMULATOR_PORT": str(sim_port),
        "LOG_LEVEL": "INFO",
        # Callbacks with the token are never limited; the fuzzers send thousands without it from one address.
        # test_rate_limits.py sets its own.
        "RATE_LIMIT_UNAUTHENTICATED": "1000000/second",
        "RATE_LIMIT_OPERATOR": "1000000/minute",
    }
    saved = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    reset_cached_clients()
    _reconfigure_worker_app()
    yield
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    reset_cached_clients()


def _reconfigure_worker_app() -> None:
    """Collection inspects task objects (`from worker.tasks import tick`), which can make Celery read its
    configuration before this fixture set the environment: without REDIS_URL that is the embedded broker
    under var/. Read it again now that REDIS_URL is set."""
    from worker.celery import app, worker_config

    if app.configured:
        app.conf.update({**broker.celery_config(), **worker_config()})


@pytest.fixture
def settings() -> Settings:
    return load_settings()


@pytest.fixture
def redis_client(redis_url: str) -> redis_lib.Redis:
    return redis_lib.Redis.from_url(redis_url)


@pytest.fixture
def clean(redis_client: redis_lib.Redis) -> Iterator[None]:
    """Empty every table and Reach's Redis keys (never Celery's own) before the test."""
    engine = db.get_engine()
    tables = ", ".join(f'"{t.name}"' for t in Base.metadata.sorted_tables)
    # A module's worker may still be finishing the previous test's work: TRUNCATE can then deadlock with
    # it, and Postgres aborts one side; ours is simply tried again.
    for attempt in range(5):
        try:
            with engine.begin() as connection:
                connection.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
            break
        except OperationalError as exc:
            if "deadlock detected" not in str(exc.orig) or attempt == 4:
                raise
    keys = list(redis_client.scan_iter("reach:*", count=1000))
    if keys:
        redis_client.delete(*keys)
    yield


#: Celery's lists on the broker that starting, resuming and ticking cycles fill (queues by task route,
#: shared.broker.TASK_ROUTES).
TASK_LISTS = ("cycle", "send")


@pytest.fixture
def task_lists(redis_client: redis_lib.Redis) -> Iterator[redis_lib.Redis]:
    """The broker's task lists, empty at the start and emptied again after the test: tests without a worker
    count the tasks a command sent there, and a later module's worker must not run them."""
    redis_client.delete(*TASK_LISTS)
    yield redis_client
    redis_client.delete(*TASK_LISTS)


@pytest.fixture
def session(clean: None) -> Iterator[Any]:
    """A database session for arranging and checking state (each test's writes are committed)."""
    factory = db._session_factory()
    with factory() as session:
        yield session


# -- the app ------------------------------------------------------------------------------------------------


@pytest.fixture
def make_app(clean: None) -> Iterator[Callable[..., Any]]:
    """Build receiver apps with setting overrides; their connections are closed after the test."""
    from web import create_app

    apps: list[Any] = []

    def make(**overrides: Any) -> Any:
        apps.append(create_app(load_settings(**overrides)))
        return apps[-1]

    yield make
    for built in apps:
        built.extensions["reach"].close()


@pytest.fixture
def app(make_app: Callable[..., Any]) -> Any:
    return make_app()


@pytest.fixture
def client(app: Any) -> Any:
    return app.test_client()


@pytest.fixture
def operator_headers() -> dict[str, str]:
    return {"Authorization": f"Bearer {API_TOKEN}"}


class QuietHandler(WSGIRequestHandler):
    """No access log line per request: thousands of callbacks would bury a failure's output."""

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        pass


class _ServerThread(threading.Thread):
    def __init__(self, wsgi_app: Any, port: int) -> None:
        super().__init__(daemon=True)
        self.server = make_server("127.0.0.1", port, wsgi_app, threaded=True, request_handler=QuietHandler)

    def run(self) -> None:
        self.server.serve_forever()

    def stop(self) -> None:
        self.server.shutdown()


@pytest.fixture(scope="session")
def receiver(environment: None) -> Iterator[str]:
    """The real receiver on a real port, as AT (the simulator) and tests reach it over HTTP."""
    from web import create_app

    port = free_port()
    app = create_app(load_settings())
    thread = _ServerThread(app, port)
    thread.start()
    yield f"http://127.0.0.1:{port}"
    thread.stop()
    app.extensions["reach"].close()


@pytest.fixture(scope="module")
def worker(environment: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[WorkerProcess]:
    """A real Celery worker with embedded beat, in its own process group.

    Module-scoped: it runs only while the modules that need it run, so it never competes with the
    tests that call the worker's functions in-process on the same database.
    """
    process = WorkerProcess(tmp_path_factory.mktemp("worker"), "test")
    yield process
    process.stop()
    if os.environ.get("REACH_TEST_SHOW_WORKER_LOG"):
        sys.stderr.write(process.log())


@pytest.fixture
def fresh_simulator(simulator: Any) -> Iterator[Any]:
    """The session's simulator with the default scenario and nothing recorded. Its reset() keeps the scenario
    (and refills its faults), so a fault a test set would meet the next test run by the same process: a 502
    left by tests/test_outside_faults.py made test_alerts' 401 a `retry`."""
    from simulator.scenario import Scenario

    simulator.set_scenario(Scenario())
    simulator.reset()
    yield simulator
    simulator.set_scenario(Scenario())


@pytest.fixture
def live(receiver: str, worker: Any, fresh_simulator: Any, clean: None) -> Iterator[Any]:
    """Everything running: receiver, worker and simulator, with the simulator fresh for this test."""
    yield fresh_simulator


@pytest.fixture
def drain(redis_client: redis_lib.Redis) -> Callable[[], int]:
    """Run the drain task's function in-process: what the worker does, without the worker."""
    from shared.inbox import Inbox
    from worker.tasks import drain_inbox

    def run() -> int:
        return drain_inbox(Inbox(redis_client), batch_size=500, budget_seconds=30)

    return run


@pytest.fixture(params=["sqlite", "postgres"])
def dialect_engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    """An engine on each database Reach runs on: a migrated SQLite file (embedded mode, as `reach up` makes
    it) and the test Postgres database, emptied."""
    from shared import migrate

    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'reach.sqlite3'}"
        migrate.upgrade(url)
    else:
        url = request.getfixturevalue("database_url")
        request.getfixturevalue("clean")
    engine = db.build_engine(url)
    yield engine
    engine.dispose()
