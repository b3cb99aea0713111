"""Reach's real Celery app, whose schedule clock runs faster, for the double-beat test (`celery -A
tests.fast_clock_app beat|worker`).

Beat sends `tests.fast_clock.tick` instead of `reach.cycle.tick`; it runs the same function
(`worker.tasks.start_due_cycles`) at a simulated time. The clock is shared by every process through
a file the test writes once all of them are up: it holds the real start, and simulated time runs
`REACH_TEST_CLOCK_SPEED` times faster from `REACH_TEST_CLOCK_START` for `REACH_TEST_CLOCK_SPAN`
simulated seconds, then stands still (so late ticks cannot reach a period the test did not expect).
Before the file exists simulated time stands at the start.
"""

from __future__ import annotations

import os
import time
from datetime import datetime, timedelta
from pathlib import Path

from shared.settings import get_settings
from worker import tasks
from worker.celery import app

SIM_START = datetime.fromisoformat(os.environ["REACH_TEST_CLOCK_START"])
SPEED = float(os.environ["REACH_TEST_CLOCK_SPEED"])
SPAN = timedelta(seconds=float(os.environ["REACH_TEST_CLOCK_SPAN"]))
CLOCK_FILE = Path(os.environ["REACH_TEST_CLOCK_FILE"])


def simulated_now() -> datetime:
    try:
        real_start = float(CLOCK_FILE.read_text())
    except (FileNotFoundError, ValueError):
        return SIM_START
    elapsed = timedelta(seconds=max(0.0, time.time() - real_start) * SPEED)
    return SIM_START + min(elapsed, SPAN)


@app.task(name="tests.fast_clock.tick", ignore_result=True)
def tick() -> list[int]:
    return tasks.start_due_cycles(simulated_now())


app.conf.beat_schedule = {
    **app.conf.beat_schedule,
    "schedules": {
        "task": "tests.fast_clock.tick",
        "schedule": get_settings().schedule_tick_seconds,
        "options": {"expires": 5},
    },
}
