"""Gunicorn hooks for Prometheus multiprocess mode: `gunicorn -c python:web.gunicorn_conf 'web:create_app()'`.

With PROMETHEUS_MULTIPROC_DIR set (an environment variable: prometheus_client reads it, not `.env`), each
receiver process writes its metrics to files there and every scrape sums them. At start the directory is
created and emptied: files of an earlier run would add its counts to this one's. When a process exits, its
files are marked dead so no live gauge of it lingers.
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
