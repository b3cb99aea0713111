"""Gunicorn settings for Prometheus multiprocess mode: `gunicorn -c python:web.gunicorn_conf 'web:create_app()'`.

With PROMETHEUS_MULTIPROC_DIR set, each receiver process writes its metrics to files there; when a process
exits its files must be marked dead, or its live gauges would linger. The directory must exist and be
emptied before gunicorn starts (old files would add yesterday's counts to today's).
"""

from __future__ import annotations

import os
from typing import Any


def child_exit(_server: Any, worker: Any) -> None:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)
