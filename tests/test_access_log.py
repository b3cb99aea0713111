"""The receiver's access line (web/access_log.py): the record it hands the handlers is the one `Logger.info`
would make, bar its caller (in no line) and its time; its process and thread are right after a fork and
on another thread."""

from __future__ import annotations

import logging
import os
import threading

from web.access_log import LINE, AccessLog, log

TIMES = {"created", "msecs", "relativeCreated"}
ARGS = ("127.0.0.1", "POST", "/dlr", 200, 47, 3)


def _fields(record: logging.LogRecord) -> dict[str, object]:
    return {name: value for name, value in vars(record).items() if name not in TIMES}


def _as_logging_makes_it(args: tuple[object, ...]) -> logging.LogRecord:
    from web import access_log

    return logging.LogRecord(log.name, logging.INFO, access_log.__file__, 0, LINE, args, None)


def test_each_record_is_the_one_logging_makes_but_its_time() -> None:
    lines = AccessLog()
    for n in range(3):  # the first made by logging, the next from its fields
        args = (*ARGS[:-1], n)
        record = lines.record(args)
        assert _fields(record) == _fields(_as_logging_makes_it(args))
        assert record.getMessage() == f'127.0.0.1 "POST /dlr" 200 47 {n}ms'
        assert abs(record.created - _as_logging_makes_it(args).created) < 5
        assert record.msecs == int((record.created - int(record.created)) * 1000)


def test_another_thread_gets_its_own_name_and_id() -> None:
    lines = AccessLog()
    here = lines.record(ARGS)
    there: list[logging.LogRecord] = []
    worker = threading.Thread(target=lambda: there.append(lines.record(ARGS)), name="elsewhere")
    worker.start()
    worker.join()
    assert (here.threadName, there[0].threadName) == (threading.current_thread().name, "elsewhere")
    assert lines.record(ARGS).thread == threading.get_ident()


def test_a_forked_child_writes_its_own_process_id() -> None:
    lines = AccessLog()
    os.register_at_fork(after_in_child=lines.forget)
    lines.record(ARGS)
    read, write = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover  (the child's)
        os.write(write, str(lines.record(ARGS).process).encode())
        os._exit(0)
    os.close(write)
    os.waitpid(child, 0)
    with os.fdopen(read) as pipe:
        assert int(pipe.read()) == child


class _CountingStream:
    def __init__(self) -> None:
        self.writes: list[str] = []

    def write(self, text: str) -> None:
        self.writes.append(text)

    def flush(self) -> None:
        pass


def _environ(path: str) -> dict[str, str]:
    return {"REMOTE_ADDR": "127.0.0.1", "REQUEST_METHOD": "POST", "PATH_INFO": path}


def test_the_lines_of_one_loop_turn_are_written_together_in_order_after_it() -> None:
    """On a loop, a turn's lines reach a plain StreamHandler in one write, at the turn's end; a handler of
    another kind (here pytest's capture, any subclass) gets each record as `Logger.handle` gives it."""
    import asyncio

    stream = _CountingStream()
    plain = logging.StreamHandler(stream)  # type: ignore[arg-type]
    plain.setFormatter(logging.Formatter("%(message)s"))
    captured: list[logging.LogRecord] = []
    other = logging.Handler()
    other.emit = captured.append  # type: ignore[method-assign]
    log.addHandler(plain)
    log.addHandler(other)
    lines = AccessLog()
    try:

        async def three_requests() -> list[str]:
            loop = asyncio.get_running_loop()
            for n in range(3):
                lines.write(_environ(f"/dlr{n}"), 200, 30, 0.0, loop)
            written_during_the_turn = list(stream.writes)
            await asyncio.sleep(0)  # the turn ends
            return written_during_the_turn

        # On a thread of its own: this one may hold a loop of another test's (Playwright's sync API keeps one).
        during: list[list[str]] = []
        turn = threading.Thread(target=lambda: during.append(asyncio.run(three_requests())))
        turn.start()
        turn.join()
        assert during == [[]]
    finally:
        log.removeHandler(plain)
        log.removeHandler(other)
    assert len(stream.writes) == 1
    assert [line.split('"')[1] for line in stream.writes[0].splitlines()] == [f"POST /dlr{n}" for n in range(3)]
    assert [record.getMessage().split('"')[1] for record in captured] == [f"POST /dlr{n}" for n in range(3)]


def test_without_a_loop_a_line_is_written_at_once() -> None:
    stream = _CountingStream()
    plain = logging.StreamHandler(stream)  # type: ignore[arg-type]
    log.addHandler(plain)
    try:
        AccessLog().write(_environ("/dlr"), 200, 30, 0.0)
    finally:
        log.removeHandler(plain)
    assert len(stream.writes) == 1 and '"POST /dlr" 200 30' in stream.writes[0]
