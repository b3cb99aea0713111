"""Reach's real Celery app with one more task, for tests that need a task in flight when the broker goes away
(`celery -A tests.inflight_app worker`).

`tests.inflight.hold(key)` appends a line to `<key>.runs` in REACH_TEST_HOLD_DIR when it starts, then waits
until the test writes `release` there, then writes `<key>.done`: a test sees each delivery that ran and holds
the task in flight as long as it likes, without a fixed sleep.

A message whose task was in flight when the broker connection was lost stays in kombu's unacknowledged hash
in Redis until the visibility timeout (shared.broker.VISIBILITY_TIMEOUT, 5 minutes) puts it back in its queue;
here it is seconds, so a test sees that delivery.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from worker.celery import app

HOLD_DIR = Path(os.environ["REACH_TEST_HOLD_DIR"])
#: Under the task's soft time limit (shared/broker.py), so a test that never releases still sees it end.
LONGEST_HOLD_SECONDS = 100.0
#: Longer than a test holds a task before Redis goes away, so a delivery is not doubled while it runs.
VISIBILITY_TIMEOUT_SECONDS = 10

app.conf.broker_transport_options = {
    **app.conf.broker_transport_options,
    "visibility_timeout": VISIBILITY_TIMEOUT_SECONDS,
    "unacked_restore_interval": 1,
}


@app.task(name="tests.inflight.hold", ignore_result=True)
def hold(key: str) -> None:
    with (HOLD_DIR / f"{key}.runs").open("a") as runs:
        runs.write(f"{os.getpid()}\n")
    deadline = time.monotonic() + LONGEST_HOLD_SECONDS
    while not (HOLD_DIR / "release").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    (HOLD_DIR / f"{key}.done").write_text("done\n")
