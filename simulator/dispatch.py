"""One background thread that runs the simulator's callback jobs in due-time order.

A job is any callable. Jobs run one at a time on a single worker thread, ordered by due time and then
by the order they were scheduled, so callbacks scheduled for the same instant keep their order. A job
may schedule follow-ups (a voice call posts its next step once it has the reply to the last one).
`clear()` drops every pending job and any follow-up a running job schedules afterwards.

Due times are read on the dispatcher's own clock: the monotonic clock plus an offset that `advance()`
moves forward, so a report scheduled hours ahead is posted as soon as a test advances past it.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from collections.abc import Callable

log = logging.getLogger(__name__)

Job = Callable[[], None]


class Dispatcher:
    """A time-ordered job queue drained by one daemon thread, started on first use."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._heap: list[tuple[float, int, int, Job]] = []
        self._seq = itertools.count()
        self._generation = 0
        #: The generation a thread acts for while it runs a job or an after-response hook.
        self._acting = threading.local()
        #: Jobs queued or running, plus holds: `idle()` is true when it is 0.
        self._busy = 0
        self._stopped = False
        self._thread: threading.Thread | None = None
        #: Seconds the clock was advanced by (`advance()`).
        self._offset = 0.0

    def now(self) -> float:
        """The dispatcher's clock: monotonic seconds, plus every `advance()` so far."""
        return time.monotonic() + self._offset

    @property
    def offset(self) -> float:
        """How far `advance()` has moved the clock, in seconds."""
        with self._cond:
            return self._offset

    def advance(self, seconds: float) -> None:
        """Move the clock forward: jobs that fall due in between run now, in their order."""
        if seconds < 0:
            raise ValueError("the clock only moves forward")
        with self._cond:
            self._offset += seconds
            self._cond.notify_all()

    def schedule(self, delay: float, job: Job) -> None:
        """Run `job` on the worker thread after `delay` seconds."""
        with self._cond:
            if self._stopped:
                return
            generation = getattr(self._acting, "generation", self._generation)
            if generation != self._generation:
                return  # a follow-up of a job (or a hook) that was cleared
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="simulator-dispatch", daemon=True)
                self._thread.start()
            heapq.heappush(self._heap, (self.now() + delay, next(self._seq), generation, job))
            self._busy += 1
            self._cond.notify_all()

    def hold(self) -> int:
        """Count as busy until `release()`, covering jobs about to be scheduled; returns the generation."""
        with self._cond:
            self._busy += 1
            return self._generation

    def run_as(self, generation: int, hook: Callable[[], object]) -> None:
        """Run `hook` here; whatever it schedules is dropped if `clear()` ran since `generation` was read.

        Checking the generation once before the hook would race a `clear()` that lands while the hook runs.
        """
        self._acting.generation = generation
        try:
            hook()
        finally:
            del self._acting.generation

    def release(self) -> None:
        """End one `hold()`."""
        with self._cond:
            self._busy -= 1
            self._cond.notify_all()

    def idle(self) -> bool:
        """True when nothing is queued, running or held."""
        with self._cond:
            return self._busy == 0

    def wait_idle(self, timeout: float) -> bool:
        """Wait until idle; False if `timeout` seconds passed first."""
        with self._cond:
            return self._cond.wait_for(lambda: self._busy == 0, timeout)

    def clear(self) -> None:
        """Drop every queued job; follow-ups scheduled by a job running now are dropped too."""
        with self._cond:
            self._generation += 1
            self._busy -= len(self._heap)
            self._heap.clear()
            self._cond.notify_all()

    def stop(self, timeout: float = 5.0) -> None:
        """Drop pending jobs and end the worker thread."""
        self.clear()
        with self._cond:
            self._stopped = True
            self._cond.notify_all()
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    def _next_job(self) -> Job | None:
        with self._cond:
            while not self._stopped:
                now = self.now()
                if self._heap and self._heap[0][0] <= now:
                    _, _, self._acting.generation, job = heapq.heappop(self._heap)
                    return job
                self._cond.wait(self._heap[0][0] - now if self._heap else None)
            return None

    def _run(self) -> None:
        while (job := self._next_job()) is not None:
            try:
                job()
            except Exception:
                log.exception("simulator job failed")
            finally:
                with self._cond:
                    self._busy -= 1
                    self._cond.notify_all()
