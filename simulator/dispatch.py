"""Background threads ("lanes") that run the simulator's callback jobs in due-time order.

A job is any callable, scheduled with an optional key (a message id, a call's session id). Jobs with the
same key run one at a time on the same lane, ordered by due time and then by the order they were scheduled,
so a message's reports scheduled for the same instant keep their order; jobs without a key all take the
first lane. Several lanes post callbacks of different messages at once: one lane waits for one answer at a
time, and at a million reports the receiver's latency, not its capacity, would set the pace. A job may
schedule follow-ups (a voice call posts its next step once it has the reply to the last one).
`clear()` drops every pending job and any follow-up a running job schedules afterwards.

The queue is bounded: `wait_for_room()` holds a caller (AT's answer to a send) while `max_pending` jobs are
queued, as AT's own queue would push back, so a simulator fed a million sends holds a bounded number of
callbacks in memory instead of all of them.

Due times are read on the dispatcher's own clock: the monotonic clock plus an offset that `advance()`
moves forward, so a report scheduled hours ahead is posted as soon as a test advances past it.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field

log = logging.getLogger(__name__)

Job = Callable[[], None]

#: Callbacks queued before a send waits for room: enough to keep every lane busy, small enough to hold
#: (a queued report is about 1 kB).
DEFAULT_MAX_PENDING = 20_000
#: Lanes of a served simulator (`python -m simulator`, `reach simulator`): a few answers in flight at once keep
#: a receiver's latency from setting the pace. A test's simulator in a thread keeps one: one order for all.
DEFAULT_SENDERS = 4


@dataclass
class _Lane:
    """One worker thread and its own time-ordered heap; `wake` shares the dispatcher's lock."""

    wake: threading.Condition
    heap: list[tuple[float, int, int, Job]] = field(default_factory=list)
    thread: threading.Thread | None = None


class Dispatcher:
    """Time-ordered job queues drained by `lanes` daemon threads, each started on first use."""

    def __init__(self, lanes: int = 1, max_pending: int = DEFAULT_MAX_PENDING) -> None:
        if lanes < 1 or max_pending < 1:
            raise ValueError("a dispatcher needs at least one lane and room for one job")
        self._lock = threading.Lock()
        #: Notified when jobs end or leave the queue: `wait_idle` and `wait_for_room` wait on it.
        self._cond = threading.Condition(self._lock)
        self._lanes = [_Lane(threading.Condition(self._lock)) for _ in range(lanes)]
        self._seq = itertools.count()
        self._generation = 0
        #: The generation a thread acts for while it runs a job or an after-response hook.
        self._acting = threading.local()
        #: Jobs queued or running, plus holds: `idle()` is true when it is 0.
        self._busy = 0
        #: Jobs queued (not yet running), against `max_pending`.
        self._queued = 0
        self.max_pending = max_pending
        self._room_waiters = 0
        self._room_wait_seconds = 0.0
        self._done = 0
        self._stopped = False
        #: Seconds the clock was advanced by (`advance()`).
        self._offset = 0.0

    def now(self) -> float:
        """The dispatcher's clock: monotonic seconds, plus every `advance()` so far."""
        return time.monotonic() + self._offset

    @property
    def offset(self) -> float:
        """How far `advance()` has moved the clock, in seconds."""
        with self._lock:
            return self._offset

    def advance(self, seconds: float) -> None:
        """Move the clock forward: jobs that fall due in between run now, in their order."""
        if seconds < 0:
            raise ValueError("the clock only moves forward")
        with self._lock:
            self._offset += seconds
            self._wake_all()

    def schedule(self, delay: float, job: Job, key: str | None = None) -> None:
        """Run `job` after `delay` seconds, on the lane of `key` (after earlier jobs of the same key)."""
        with self._lock:
            if self._stopped:
                return
            generation = getattr(self._acting, "generation", self._generation)
            if generation != self._generation:
                return  # a follow-up of a job (or a hook) that was cleared
            lane = self._lanes[zlib.crc32(key.encode()) % len(self._lanes) if key else 0]
            if lane.thread is None:
                lane.thread = threading.Thread(target=self._run, args=(lane,), name="simulator-dispatch", daemon=True)
                lane.thread.start()
            heapq.heappush(lane.heap, (self.now() + delay, next(self._seq), generation, job))
            self._busy += 1
            self._queued += 1
            lane.wake.notify()

    def wait_for_room(self) -> None:
        """Return once fewer than `max_pending` jobs are queued (or the dispatcher stopped)."""
        with self._lock:
            if self._queued < self.max_pending or self._stopped:
                return
            started = time.monotonic()
            self._room_waiters += 1
            try:
                self._cond.wait_for(lambda: self._queued < self.max_pending or self._stopped)
            finally:
                self._room_waiters -= 1
                self._room_wait_seconds += time.monotonic() - started

    def stats(self) -> dict[str, float]:
        """Jobs queued and run so far, callers waiting for room now and the seconds they waited in all."""
        with self._lock:
            return {
                "queued": self._queued,
                "done": self._done,
                "waiting_for_room": self._room_waiters,
                "room_wait_seconds": round(self._room_wait_seconds, 3),
                "lanes": len(self._lanes),
                "max_pending": self.max_pending,
            }

    def hold(self) -> int:
        """Count as busy until `release()`, covering jobs about to be scheduled; returns the generation."""
        with self._lock:
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
        with self._lock:
            self._busy -= 1
            self._cond.notify_all()

    def idle(self) -> bool:
        """True when nothing is queued, running or held."""
        with self._lock:
            return self._busy == 0

    def wait_idle(self, timeout: float) -> bool:
        """Wait until idle; False if `timeout` seconds passed first."""
        with self._lock:
            return self._cond.wait_for(lambda: self._busy == 0, timeout)

    def clear(self) -> None:
        """Drop every queued job; follow-ups scheduled by a job running now are dropped too."""
        with self._lock:
            self._generation += 1
            for lane in self._lanes:
                self._busy -= len(lane.heap)
                self._queued -= len(lane.heap)
                lane.heap.clear()
            self._wake_all()

    def stop(self, timeout: float = 5.0) -> None:
        """Drop pending jobs and end the lanes' threads."""
        self.clear()
        with self._lock:
            self._stopped = True
            self._wake_all()
            threads = [lane.thread for lane in self._lanes if lane.thread is not None]
        for thread in threads:
            if thread is not threading.current_thread():
                thread.join(timeout)

    def _wake_all(self) -> None:
        for lane in self._lanes:
            lane.wake.notify_all()
        self._cond.notify_all()

    def _next_job(self, lane: _Lane) -> Job | None:
        with self._lock:
            while not self._stopped:
                now = self.now()
                if lane.heap and lane.heap[0][0] <= now:
                    _, _, self._acting.generation, job = heapq.heappop(lane.heap)
                    self._queued -= 1
                    if self._room_waiters:
                        self._cond.notify_all()
                    return job
                lane.wake.wait(lane.heap[0][0] - now if lane.heap else None)
            return None

    def _run(self, lane: _Lane) -> None:
        while (job := self._next_job(lane)) is not None:
            try:
                job()
            except Exception:
                log.exception("simulator job failed")
            finally:
                with self._lock:
                    self._busy -= 1
                    self._done += 1
                    if self._busy == 0 or self._room_waiters:
                        self._cond.notify_all()
