"""A worker with a task in flight when Redis goes away: it must go on consuming once Redis is back, and the
task's message (acknowledged late) must be delivered again, not dropped.

kombu 5.7 stopped such a worker for good: closing the lost connection restores the channel's unacknowledged
messages, and that restore raised AttributeError (shared/kombu_fix.py says why). A drain lingering
(DRAIN_LINGER_MS), a cycle's dispatch or any long task is such a task in flight.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from simulator.scenario import Scenario
from tests.conftest import wait_for
from tests.services import WorkerProcess
from tests.stack import fault_stack

pytestmark = [pytest.mark.worker, pytest.mark.fault]


def runs(hold_dir: Path, key: str) -> int:
    """How many times `tests.inflight.hold(key)` started (tests/inflight_app.py)."""
    path = hold_dir / f"{key}.runs"
    return len(path.read_text().splitlines()) if path.exists() else 0


def test_worker_with_a_task_in_flight_goes_on_consuming_after_redis_returns(tmp_path: Path) -> None:
    hold_dir = tmp_path / "hold"
    hold_dir.mkdir()
    with fault_stack(tmp_path, Scenario(), reach_test_hold_dir=hold_dir) as stack:
        assert stack.redis_server is not None
        worker = stack.start_worker("worker", app="tests.inflight_app", beat=False)
        # The housekeeping a starting worker sends itself done first: then the held task is the one message in
        # flight, and the worker (2 processes, prefetch 1) waits on Redis for another, as a drain lingering does.
        wait_for(lambda: succeeded(worker.log(), "housekeeping") == 2, timeout=30, what="start-up housekeeping")
        celery = stack.app.extensions["reach"].celery
        celery.send_task("tests.inflight.hold", args=["in-flight"])
        wait_for(lambda: runs(hold_dir, "in-flight") == 1, timeout=30, what="the task in flight")
        stack.redis_server.kill()
        wait_for(lambda: "Connection to broker lost" in worker.log(), timeout=30, what="the worker losing Redis")
        stack.redis_server.start()  # same port and directory: reloads the append-only file
        wait_for(lambda: reconnected_or_stopped(worker), timeout=60, what="the worker connected again, or stopped")
        stopped = [line for line in worker.log().splitlines() if "Unrecoverable error" in line]
        assert not stopped, f"the worker stopped: {stopped}"
        (hold_dir / "release").touch()  # from now on every run of the task finishes at once
        celery.send_task("tests.inflight.hold", args=["after"])
        wait_for(
            lambda: (hold_dir / "after.done").exists() or worker.process.poll() is not None,
            timeout=60,
            what="a task sent after Redis returned to run, or the worker to stop",
        )
        assert worker.process.poll() is None, f"the worker stopped:\n{worker.log()[-3000:]}"
        # Acknowledged late, the message of the task in flight is delivered again (tests/inflight_app.py: after
        # a visibility timeout of seconds), whether its first run was stopped or finished unacknowledged.
        wait_for(
            lambda: runs(hold_dir, "in-flight") >= 2 and (hold_dir / "in-flight.done").exists(),
            timeout=60,
            what="the task in flight when Redis went away delivered again and done",
        )


def reconnected_or_stopped(worker: WorkerProcess) -> bool:
    log = worker.log()
    return log.count("Connected to redis") == 2 or "Unrecoverable error" in log or worker.process.poll() is not None


def succeeded(log: str, task: str) -> int:
    return sum(1 for line in log.splitlines() if task in line and " succeeded in " in line)
