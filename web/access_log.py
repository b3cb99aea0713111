"""The receiver's access line, one per request, as gunicorn's access log wrote it (reach_cli/processes.py
ACCESS_LOG_FORMAT: the client, the method and the path, never the query, the status, the body's bytes, the
milliseconds), INFO whatever LOG_LEVEL says, through Reach's redacting handler like every other line.

Written by the async front (web/front.py) on its event loop, for every callback: so the record is made as
`Logger.info` would make it, less the two costs that tell nothing here. It does not look up the caller's file
and line (not in any line Reach writes), and it does not ask the kernel for the process id per line
(`LogRecord` calls os.getpid(), a system call, each time: 5 % of the front's time per DLR): the record's
fields are copied from one made on this thread in this process, then its own are set.

Given the event loop it runs on, the lines of one turn of the loop are handed over together, at its end: a plain
`logging.StreamHandler` (Reach's own, shared/logs.py) then formats each line as ever and writes them in one
`write` and one flush, where each line cost a lock, a write and a flush of its own (a system call per
callback). Any other handler gets each record by `Handler.handle`, as `Logger.handle` would give it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from typing import Any

log = logging.getLogger("web.access")
log.setLevel(logging.INFO)
LINE = '%s "%s %s" %s %s %sms'


class AccessLog:
    def __init__(self) -> None:
        self._made: tuple[int, dict[str, Any]] | None = None  # (thread, a record's fields made on it)
        self._waiting: list[logging.LogRecord] = []  # this loop turn's lines, written at its end

    def write(
        self,
        environ: dict[str, Any],
        status: int,
        size: int,
        started: float,
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        """The request's line: at the end of this turn of `loop` (the caller's, running), else at once."""
        if not log.isEnabledFor(logging.INFO):
            return
        elapsed_ms = int((time.perf_counter() - started) * 1000)
        request = (environ["REMOTE_ADDR"] or "-", environ["REQUEST_METHOD"], environ["PATH_INFO"])
        record = self.record((*request, status, size, elapsed_ms))
        if loop is None:
            log.handle(record)
            return
        self._waiting.append(record)
        if len(self._waiting) == 1:
            loop.call_soon(self.flush)

    def flush(self) -> None:
        """Write the lines waiting for the end of the loop's turn (also as the front stops)."""
        records, self._waiting = self._waiting, []
        if records:
            handle_together(log, records)

    def record(self, args: tuple[Any, ...]) -> logging.LogRecord:
        """`logging.LogRecord(...)` as `log.info(LINE, *args)` makes it (its caller unknown), its process and
        thread fields those of the last record made on this thread."""
        thread = threading.get_ident()
        made = self._made
        if made is None or made[0] != thread:
            record = logging.LogRecord(log.name, logging.INFO, __file__, 0, LINE, args, None)
            self._made = (thread, dict(record.__dict__))  # one assignment: another thread may write too
            return record
        record = logging.LogRecord.__new__(logging.LogRecord)
        record.__dict__.update(made[1])
        created = time.time()  # LogRecord's own times, as it sets them
        record.created = created
        record.msecs = int((created - int(created)) * 1000) + 0.0
        record.relativeCreated = (created - logging._startTime) * 1000
        record.args = args
        return record

    def forget(self) -> None:
        """In a forked child: its process id is another, and the parent's waiting lines are the parent's."""
        self._made = None
        self._waiting = []


def handle_together(logger: logging.Logger, records: list[logging.LogRecord]) -> None:
    """`logger.handle(record)` for each record, the records of one level, in order: each handler that would take
    them gets them, a plain StreamHandler in one write."""
    if logger.disabled:
        return
    records = [record for record in records if logger.filter(record)]
    level = records[0].levelno if records else logging.NOTSET
    current: logging.Logger | None = logger
    while records and current is not None:
        for handler in current.handlers:
            if level >= handler.level:
                _emit_together(handler, records)
        current = current.parent if current.propagate else None


def _emit_together(handler: logging.Handler, records: list[logging.LogRecord]) -> None:
    if type(handler) is not logging.StreamHandler:  # a subclass may emit its own way (a file, a test's capture)
        for record in records:
            handler.handle(record)
        return
    kept = [record for record in records if handler.filter(record)]
    if not kept:
        return
    with handler.lock:  # type: ignore[union-attr]  (made in the handler's __init__)
        try:
            handler.stream.write("".join(handler.format(record) + handler.terminator for record in kept))
            handler.flush()
        except RecursionError:
            raise
        except Exception:  # as StreamHandler.emit: logging must not take the process down
            handler.handleError(kept[0])


access_log = AccessLog()
os.register_at_fork(after_in_child=access_log.forget)
