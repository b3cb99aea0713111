"""The one decorator every Reach task is declared through: explicit, stable names and our defaults."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from worker.celery import app


def reach_task(name: str, **options: Any) -> Callable[[Callable[..., Any]], Any]:
    """`@reach_task("reach.<area>.<verb>", time_limit=...)`: names never change once shipped; queues come
    from `shared.broker.TASK_ROUTES`."""
    if not name.startswith("reach."):
        raise ValueError(f"task names start with 'reach.': {name}")
    options.setdefault("ignore_result", True)
    return app.task(name=name, **options)
