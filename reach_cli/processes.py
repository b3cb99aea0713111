"""The one place each Reach process's command line is written.

`docker-compose.yml` runs exactly these (tests/test_deploy.py compares them), `reach up` runs them, and
the test suite's worker (tests/services.py) runs them, so the production shape is the shape under test.
Commands are argument lists without the interpreter: `reach up` and the tests put `python -m` in front.
"""

from __future__ import annotations

from dataclasses import dataclass

from shared.broker import QUEUES

#: Where the receiver listens inside its container (design §3: port 8000).
CONTAINER_BIND = "0.0.0.0:8000"

#: The access log line without the query string: AT callbacks carry `?token=WEBHOOK_TOKEN`, and a
#: secret must never reach a log. `%(U)s` is the path alone.
ACCESS_LOG_FORMAT = '%(h)s "%(m)s %(U)s" %(s)s %(b)s %(M)sms'


def receiver(bind: str, workers: int = 2, connections: int = 500, keep_alive: int = 5) -> list[str]:
    """`gunicorn 'web:create_app()'`: `workers` gevent processes, each serving up to `connections` requests at
    once (views wait on Redis and Postgres, not the CPU; psycopg 3 cooperates with gevent since 3.1.14);
    timeouts well above the slowest view, graceful stop within compose's 30 s.

    `keep_alive` also bounds a request's line and headers: a gevent worker reads them within that many
    seconds or closes the connection (slow headers hold no slot longer). The body's bound is the app's
    (BODY_TIMEOUT_SECONDS: web/body_deadline.py).

    gevent because it took the least CPU per callback and the most callbacks per second of the gunicorn
    worker classes (bench/RESULTS.md, section 1): concurrent callbacks share a Redis round trip there
    (web/group_commit.py). gunicorn's gevent worker and logger, each with one cost per request cut: a
    response's head and body go out in one `send` (web/gunicorn_worker.py), and the access line builds only
    the atoms its format names (web/gunicorn_log.py).

    Not granian, though it spends far less CPU per request: it reads a request body in Rust without a time
    limit, so a trickled body would hold a receiver thread for as long as the client likes (bench/RESULTS.md,
    section 1, "granian")."""
    return [
        "gunicorn", "--config", "python:web.gunicorn_conf",
        "--bind", bind, "--workers", str(workers), "--worker-class", "web.gunicorn_worker.GeventWorker",
        "--worker-connections", str(connections),
        "--timeout", "30", "--graceful-timeout", "20", "--keep-alive", str(keep_alive),
        "--access-logfile", "-", "--access-logformat", ACCESS_LOG_FORMAT,
        "--logger-class", "web.gunicorn_log.Logger",
        # gunicorn 27's control socket is one path per user (~/.gunicorn): receivers on one host (tests, a
        # second instance) would take it from each other, and Reach never uses it.
        "--no-control-socket",
        "web:create_app()",
    ]  # fmt: skip


@dataclass(frozen=True)
class WorkerProfile:
    """Which queues one kind of worker consumes, and with what pool (celery-reliability.md §1.5)."""

    queues: tuple[str, ...]
    concurrency: int
    prefetch: int


#: The production workers, one compose service each, together consuming every queue of
#: `shared.broker.QUEUES`. All are prefork: the threads pool enforces no task time limit, and the send
#: dispatchers rely on theirs; sends are few and long (batches of SMS_BATCH_SIZE, capped calls), so a few
#: processes keep AT busy up to SEND_RATE_PER_SECOND.
WORKERS: dict[str, WorkerProfile] = {
    # Callbacks into Postgres: the drain task claims batches itself, so prefetching is cheap.
    "worker": WorkerProfile(queues=("ingest", "celery"), concurrency=2, prefetch=4),
    # SMS and calls to AT (I/O bound, long): never prefetch behind a running send.
    "worker-send": WorkerProfile(queues=("send",), concurrency=4, prefetch=1),
    # Planning, schedules and cycle housekeeping: one at a time is enough and keeps planning serial.
    "worker-cycle": WorkerProfile(queues=("cycle",), concurrency=1, prefetch=1),
}

#: What `reach up` and the tests run: one worker on every queue.
ALL_QUEUES = WorkerProfile(queues=QUEUES, concurrency=2, prefetch=1)


def worker(profile: WorkerProfile, *extra: str, app: str = "worker") -> list[str]:
    """`celery -A worker worker` for one profile. Gossip and mingle are off: with a Redis broker they only
    add chatter; Flower follows workers through task events."""
    return [
        "celery", "-A", app, "worker", "--queues", ",".join(profile.queues),
        "--pool", "prefork", "--concurrency", str(profile.concurrency),
        "--prefetch-multiplier", str(profile.prefetch),
        "--without-gossip", "--without-mingle", "--loglevel", "INFO", *extra,
    ]  # fmt: skip


def beat(schedule_file: str, app: str = "worker") -> list[str]:
    """`celery -A worker beat`: exactly one in a deployment (cycles are idempotent per period anyway)."""
    return ["celery", "-A", app, "beat", "--schedule", schedule_file, "--loglevel", "INFO"]


def flower(port: int = 5555) -> list[str]:
    """`celery -A worker flower`; credentials come from FLOWER_BASIC_AUTH (see docker-compose.yml)."""
    return ["celery", "-A", "worker", "flower", f"--port={port}"]


MIGRATE = ["reach", "db", "upgrade"]
