"""The receiver's access line, one per request, as gunicorn's access log wrote it (reach_cli/processes.py
ACCESS_LOG_FORMAT: the client, the method and the path, never the query, the status, the body's bytes, the
milliseconds), INFO whatever LOG_LEVEL says, through Reach's redacting handler like every other line.

Written by the async front (web/front.py) on its event loop, for every callback: so the record is made as
`Logger.info` would make it, less the two costs that tell nothing here. It does not look up the caller's file
and line (not in any line Reach writes), and it does not ask the kernel for the process id per line
(`LogRecord` calls os.getpid(), a system call, each time: 5 % of the front's time per DLR): the record's
fields are copied from one made on this thread in this process, then its own are set.
"""

from __future__ import annotations

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

    def write(self, environ: dict[str, Any], status: int, size: int, started: float) -> None:
        if not log.isEnabledFor(logging.INFO):
            return
        elapsed_ms = int((time.perf_counter() - started) * 1000)
        request = (environ["REMOTE_ADDR"] or "-", environ["REQUEST_METHOD"], environ["PATH_INFO"])
        log.handle(self.record((*request, status, size, elapsed_ms)))

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
        """In a forked child: its process id is another."""
        self._made = None


access_log = AccessLog()
os.register_at_fork(after_in_child=access_log.forget)
