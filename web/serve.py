"""The receiver's server: `python -m web.serve --bind HOST:PORT` runs granian with the async front (web/front.py).

granian serves HTTP in Rust; each of its worker processes runs the front on one event loop, the Flask app in a
pool of threads. Done here, in the main process, before any worker starts:

- Prometheus multiprocess mode: with PROMETHEUS_MULTIPROC_DIR set (an environment variable: prometheus_client
  reads it, not `.env`), each worker writes its metrics to files there and every scrape sums them. The
  directory is created and emptied at start (files of an earlier run would add its counts to this one's);
  a worker marks its files dead when it stops (web/front.py).
- granian's own log lines go through Reach's redacting handler (shared/logs.py).

Each worker's event loop is uvloop's (a dependency; granian picks it when installed): the receiver spent
0.83x the CPU per DLR on it (bench/RESULTS.md, section "receiver on granian").

Bounds: a request's line and headers must arrive within `--header-timeout` seconds (granian closes the
connection otherwise); a body within BODY_TIMEOUT_SECONDS plus its pace (web/front_bodies.py). SIGTERM or
SIGINT stops accepting, lets the requests in flight finish (up to `--graceful-timeout`), then exits; SIGHUP
replaces the workers one by one, the new ones reading the settings anew (a rotated token), unless they do not
load (`receiver_server`).
"""

from __future__ import annotations

import argparse
import logging
import math
import multiprocessing.connection
import os
import socket
import time
from pathlib import Path

from web.front import DEFAULT_THREADS, THREADS_VARIABLE

log = logging.getLogger("web.serve")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m web.serve", description=__doc__.splitlines()[0])
    parser.add_argument("--bind", required=True, help="HOST:PORT")
    parser.add_argument("--workers", type=int, default=1, help="processes, one event loop each")
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

granian_log = logging.getLogger("_granian")


def receiver_server(server_class: type) -> type:
    """granian's server class, with a listening socket of the main process's, a reload that first checks the
    settings, and a stop of its own.

    SIGHUP (a rotated WEBHOOK_TOKEN in the project's .env) starts new workers, which read the settings anew
    (web/front.py `create_front`). granian stops the old workers whether or not the new ones started: new
    settings that do not load would leave no worker at all, the receiver down. They are read here first, and a
    SIGHUP that would fail is refused with the reason; the workers serve on as they were.

    One listening socket, made here and inherited by every worker (granian's way off Linux). On Linux granian
    has each worker bind a socket of its own (SO_REUSEPORT), so a worker that died (the OOM killer, a crash)
    left the port closed until its successor bound it: with one worker, 130-160 ms of refused callbacks. The
    socket held here keeps new connections in its backlog until the new worker takes them.

    The stop works around two faults of granian's:

    - granian signals each worker once. A worker signalled in its first milliseconds, before it set handlers of
      its own (web/front.py `create_front`, then granian's), heard it through the main process's handler it
      inherited, a flag in its own memory, and was killed only after the graceful timeout (20 s;
      tests/test_receiver_server.py, 1 run in 8). Here a worker still running hears SIGTERM again every 0.5 s.
    - granian asks `is_alive()` after `join()`, 1 ms apart, while a watcher thread of its own reaps the same
      process: under load the watcher has reaped it but not yet noted it, so a worker that had exited was
      reported "Killing worker-N after it refused to gracefully stop" (1 stop in 40 with the cores busy, and in
      CI). Here a worker has stopped when its sentinel says so: the pipe closes only as the process exits."""

    class Receiver(server_class):  # type: ignore[misc, valid-type]
        def _init_shared_socket(self) -> None:
            from granian.net import SocketSpec

            handle = SocketSpec(self.bind_addr, self.bind_port, self.backlog).build()
            self._shd, self._sfd, self._ssp = handle, handle.get_fd(), None
            self._sso = socket.socket(fileno=self._sfd)
            self._sso.set_inheritable(True)

        def _reload(self, *args: object) -> object:
            from shared.settings import SettingsError, load_settings

            try:
                load_settings()
            except SettingsError as exc:
                self.reload_signal = False
                self.main_loop_interrupt.clear()
                granian_log.error(f"SIGHUP refused, the workers keep their settings: {exc}")
                return None
            return super()._reload(*args)

        def _stop_workers(self) -> None:
            running = {worker.inner.sentinel: worker for worker in self.wrks}
            for worker in running.values():
                worker.terminate()  # granian's: marks the exit as asked for, so its watcher stays quiet
            deadline = time.monotonic() + self.workers_kill_timeout if self.workers_kill_timeout else math.inf
            while running and time.monotonic() < deadline:
                wait_at_most = min(RESIGNAL_SECONDS, deadline - time.monotonic())
                for sentinel in multiprocessing.connection.wait(list(running), timeout=max(wait_at_most, 0)):
                    granian_log.info(f"Stopped worker-{running.pop(sentinel).idx + 1}")
                for worker in running.values():
                    worker.inner.terminate()
            for worker in running.values():
                granian_log.warning(f"Killing worker-{worker.idx + 1} after it refused to gracefully stop")
                worker.kill()
                worker.join()
                granian_log.info(f"Stopped worker-{worker.idx + 1}")
            for worker in self.wrks:
                worker.join()  # reaps the ones whose sentinel closed
            self.wrks.clear()

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
    server = receiver_server(Granian)(
        "web.front:create_front",
        factory=True,
        address=host,
        port=int(port),
        interface=Interfaces.RSGI,
        workers=args.workers,
        websockets=False,
        backpressure=args.backpressure,
        http1_settings=HTTP1Settings(header_read_timeout=int(args.header_timeout * 1000)),
        log_dictconfig=granian_log_config(),
        log_access=False,  # the front writes gunicorn's access line (web/front.py)
        respawn_failed_workers=True,
        workers_kill_timeout=args.graceful_timeout,
    )
    server.serve()


if __name__ == "__main__":
    main()
