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

#: The access line's format (gunicorn's atoms): the path without the query string, as AT callbacks carry
#: `?token=WEBHOOK_TOKEN` and a secret must never reach a log. The async front writes this line (web/front.py).
ACCESS_LOG_FORMAT = '%(h)s "%(m)s %(U)s" %(s)s %(b)s %(M)sms'


def receiver(bind: str, workers: int = 1, threads: int = 16, header_timeout: float = 5) -> list[str]:
    """`python -m web.serve`: granian with Reach's async front (web/front.py), `workers` processes of one event
    loop each; the Flask app on `threads` threads per process (views wait on Redis and Postgres, not the CPU).

    The loop reads every request's body under BODY_TIMEOUT_SECONDS and its pace before a thread sees it
    (web/front_bodies.py), so a trickling client holds no thread and is answered 408 at that bound; granian
    closes a connection whose request line and headers take longer than `header_timeout` seconds. On the
    loop too, the happy path of `POST /dlr` and `POST /receiveSMS` (web/fastpath.py's rules), concurrent
    callbacks sharing a Redis round trip (web/async_group.py). The access line is gunicorn's format, the
    path without the query (`?token=`); metrics are summed over the processes (PROMETHEUS_MULTIPROC_DIR,
    emptied at start by web/serve.py); SIGTERM lets requests in flight finish (up to 20 s).

    granian rather than gunicorn's gevent workers (the receiver before issue 15): end to end, in the same
    rounds, 1.9-2.8x the DLRs/s with 0.62-0.76x the receiver's CPU per DLR (bench/RESULTS.md, section 11,
    "Receiver on granian"). granian's own WSGI mode was not enough: it reads a body in Rust without a time
    limit, so a trickled body would hold a thread.

    One process by default: it answers ~11,000 DLRs/s here (`python -m bench.receiver`), more than the worker
    and Postgres apply on the same cores, and a second one on 2 cores cost 1.1-1.6x the receiver's CPU per DLR end
    to end (half the batch per Redis round trip, two processes' threads contending; bench/RESULTS.md, section 7,
    "Run 7"). A process that dies is started again by granian while new connections wait in the listening
    socket the main process holds (web/serve.py), and SIGHUP starts the new process before it stops the old one,
    so one is never none (tests/test_receiver_reload.py).
    `--workers N` for a receiver with cores of its own."""
    return [
        "web.serve", "--bind", bind, "--workers", str(workers), "--threads", str(threads),
        "--header-timeout", f"{header_timeout:g}", "--graceful-timeout", "20",
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
