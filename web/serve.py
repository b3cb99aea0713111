"""The receiver's server: `python -m web.serve --bind HOST:PORT` runs granian with the async front (web/asgi.py).

granian serves HTTP in Rust; each of its worker processes runs the front on one event loop, the Flask app in a
pool of threads. Done here, in the main process, before any worker starts:

- Prometheus multiprocess mode: with PROMETHEUS_MULTIPROC_DIR set (an environment variable: prometheus_client
  reads it, not `.env`), each worker writes its metrics to files there and every scrape sums them. The
  directory is created and emptied at start (files of an earlier run would add its counts to this one's);
  a worker marks its files dead when it stops (web/asgi.py).
- granian's own log lines go through Reach's redacting handler (shared/logs.py).

Each worker's event loop is uvloop's (a dependency; granian picks it when installed): the receiver spent
0.83x the CPU per DLR on it (bench/RESULTS.md, section "receiver on granian").

Bounds: a request's line and headers must arrive within `--header-timeout` seconds (granian closes the
connection otherwise); a body within BODY_TIMEOUT_SECONDS plus its pace (web/asgi_bodies.py). SIGTERM or
SIGINT stops accepting, lets the requests in flight finish (up to `--graceful-timeout`), then exits; SIGHUP
replaces the workers one by one (a rotated token is read by the new ones).
"""

from __future__ import annotations

import argparse
import logging
import os
import threading
from pathlib import Path

from web.asgi import DEFAULT_THREADS, THREADS_VARIABLE

log = logging.getLogger("web.serve")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m web.serve", description=__doc__.splitlines()[0])
    parser.add_argument("--bind", required=True, help="HOST:PORT")
    parser.add_argument("--workers", type=int, default=2, help="processes, one event loop each")
    parser.add_argument("--threads", type=int, default=DEFAULT_THREADS, help="Flask threads per process")
    parser.add_argument("--header-timeout", type=float, default=5, help="seconds for a request's line and headers")
    parser.add_argument("--graceful-timeout", type=int, default=20, help="seconds in-flight requests get to finish")
    parser.add_argument("--backpressure", type=int, default=None, help="requests served at once per process")
    return parser.parse_args(argv)


def prepare_metrics_directory(workers: int) -> None:
    path = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if path:
        Path(path).mkdir(parents=True, exist_ok=True)
        for stale in Path(path).glob("*.db"):
            stale.unlink()
    elif workers > 1:
        log.warning("PROMETHEUS_MULTIPROC_DIR is not set: each /metrics scrape shows one worker's counts")


def granian_log_config() -> dict:
    """granian's loggers on stderr through Reach's redacting formatter (shared/logs.py)."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"reach": {"()": "web.serve._redacting_formatter"}},
        "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "reach", "stream": "ext://sys.stderr"}},
        "loggers": {
            "_granian": {"handlers": ["stderr"], "level": "INFO", "propagate": False},
            "granian.access": {"handlers": ["stderr"], "level": "INFO", "propagate": False},
        },
    }


def _redacting_formatter() -> logging.Formatter:
    from shared.logs import LOG_FORMAT, RedactingFormatter, configured_secrets

    return RedactingFormatter(LOG_FORMAT, configured_secrets())


#: While the receiver stops, how often a worker still running hears SIGTERM again.
RESIGNAL_SECONDS = 0.5


def stopping_workers_again(server_class: type) -> type:
    """granian's server class, whose stop says SIGTERM again to a worker that goes on. granian signals each worker
    once; a worker signalled in its first milliseconds, before it set handlers of its own (web/asgi.py
    `create_front`, then granian's), heard it through the main process's handler it inherited, a flag in its own
    memory, and was killed only after the graceful timeout (20 s; tests/test_receiver_server.py, 1 run in 8)."""

    class Receiver(server_class):  # type: ignore[misc, valid-type]
        def _stop_workers(self) -> None:
            stopped = threading.Event()
            again = threading.Thread(target=self._say_stop_again, args=(stopped,), name="resignal", daemon=True)
            again.start()
            try:
                super()._stop_workers()
            finally:
                stopped.set()
                again.join()

        def _say_stop_again(self, stopped: threading.Event) -> None:
            while not stopped.wait(RESIGNAL_SECONDS):
                for worker in list(self.wrks):
                    worker.inner.terminate()  # nothing once it has exited (multiprocessing knows its exit code)

    return Receiver


def main(argv: list[str] | None = None) -> None:
    from granian import Granian
    from granian.constants import Interfaces
    from granian.http import HTTP1Settings

    from shared.logs import configure_logging
    from shared.settings import get_settings

    args = parse_args(argv)
    host, _, port = args.bind.rpartition(":")
    configure_logging(get_settings().log_level)  # and refuse to start on invalid settings, before any worker
    prepare_metrics_directory(args.workers)
    os.environ[THREADS_VARIABLE] = str(args.threads)  # read by each worker's factory
    server = stopping_workers_again(Granian)(
        "web.asgi:create_front",
        factory=True,
        address=host,
        port=int(port),
        interface=Interfaces.ASGI,
        workers=args.workers,
        websockets=False,
        backpressure=args.backpressure,
        http1_settings=HTTP1Settings(header_read_timeout=int(args.header_timeout * 1000)),
        log_dictconfig=granian_log_config(),
        log_access=False,  # the front writes gunicorn's access line (web/asgi.py)
        respawn_failed_workers=True,
        workers_kill_timeout=args.graceful_timeout,
    )
    server.serve()


if __name__ == "__main__":
    main()
