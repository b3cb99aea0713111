"""Gunicorn hooks: `gunicorn -c python:web.gunicorn_conf 'web:create_app()'`.

Logging: gunicorn's master sets up its error and access logs; each worker, once the app is loaded, sends
Reach's own records through Reach's redacting handler and scrubs the same secrets from gunicorn's two logs
(a request line gunicorn cannot parse is logged as sent, `?token=` and all). Not in the master: it must not
import the app's modules before a gevent worker has patched the standard library (web/__init__.py).

Prometheus multiprocess mode: with PROMETHEUS_MULTIPROC_DIR set (an environment variable: prometheus_client
reads it, not `.env`), each receiver process writes its metrics to files there and every scrape sums them. At
start the directory is created and emptied: files of an earlier run would add its counts to this one's. When
a process exits, its files are marked dead so no live gauge of it lingers.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any


def on_starting(server: Any) -> None:
    path = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if path:
        Path(path).mkdir(parents=True, exist_ok=True)
        for stale in Path(path).glob("*.db"):
            stale.unlink()
    elif server.cfg.workers > 1:
        server.log.warning("PROMETHEUS_MULTIPROC_DIR is not set: each /metrics scrape shows one worker's counts")


def child_exit(_server: Any, worker: Any) -> None:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)


def post_worker_init(worker: Any) -> None:
    from shared.logs import configure_logging, configured_secrets, redact_handlers
    from shared.settings import get_settings

    configure_logging(get_settings().log_level)  # the app has read the settings: they are valid
    secrets = configured_secrets()
    redact_handlers(worker.log.error_log, secrets)
    redact_handlers(worker.log.access_log, secrets)
