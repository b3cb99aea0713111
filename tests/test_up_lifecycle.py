"""`reach up`'s life and death (issue 13): no child outlives it, one instance per var/, and a port it cannot
have is an error, not "Reach is up". Real processes in the embedded mode (no Postgres, no Redis needed)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import psutil
import pytest

from reach_cli.up import Restarts
from tests.conftest import wait_for
from tests.test_embedded import bare_environment, two_free_ports

START_TIMEOUT_SECONDS = 90


class Up:
    """A `reach up` process with its output collected line by line."""

    def __init__(self, workdir: Path, port: int) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "reach_cli.main", "up"],
            cwd=workdir,
            env=bare_environment(workdir, port),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines: list[str] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        self.lines.extend(iter(self.process.stdout.readline, ""))  # type: ignore[union-attr]

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def wait_up(self) -> None:
        wait_for(
            lambda: "Press Ctrl-C" in self.output or self.process.poll() is not None,
            timeout=START_TIMEOUT_SECONDS,
            interval=0.3,
            what="reach up to start",
        )
        assert self.process.poll() is None, self.output

    def descendants(self) -> list[psutil.Process]:
        return psutil.Process(self.process.pid).children(recursive=True)

    def finish(self, timeout: float = 60) -> int:
        try:
            return self.process.wait(timeout)
        finally:
            self.reader.join(5)
            self.process.stdout.close()  # type: ignore[union-attr]


@contextmanager
def reach_up(workdir: Path, port: int) -> Iterator[Up]:
    """Start `reach up`; afterwards stop it (SIGINT) and kill whatever it left, so no test leaves orphans."""
    up = Up(workdir, port)
    seen: dict[int, psutil.Process] = {}
    try:
        yield up
    finally:
        if up.process.poll() is None:
            seen.update((p.pid, p) for p in up.descendants())
            up.process.send_signal(signal.SIGINT)
            try:
                up.finish()
            except subprocess.TimeoutExpired:
                up.process.kill()
        elif not up.process.stdout.closed:  # type: ignore[union-attr]
            up.finish()
        for process in seen.values():
            with suppress(psutil.Error):
                process.kill()


def running(processes: list[psutil.Process]) -> list[str]:
    """Those of `processes` still running (zombies count as gone), as `pid command`."""
    left = []
    for process in processes:
        try:
            if process.status() != psutil.STATUS_ZOMBIE:
                left.append(f"{process.pid} {' '.join(process.cmdline())[:120]}")
        except psutil.Error:
            continue
    return left


@pytest.mark.timeout(180)
def test_sigkill_of_reach_up_ends_every_child_and_grandchild(tmp_path: Path) -> None:
    """Killed with SIGKILL (or by the OOM killer), `reach up` must not leave its receiver, worker, beat or
    simulator running orphaned, still sending."""
    with reach_up(tmp_path, two_free_ports()) as up:
        up.wait_up()
        tree = up.descendants()
        commands = " | ".join(" ".join(p.cmdline()) for p in tree)
        assert "web.serve" in commands and "--beat" in commands and " simulator " in commands, commands
        try:
            up.process.send_signal(signal.SIGKILL)
            up.finish()
            wait_for(lambda: not running(tree), timeout=20, interval=0.3, what="every child of reach up to end")
        finally:
            for process in tree:
                with suppress(psutil.Error):
                    process.kill()


@pytest.mark.timeout(180)
def test_a_second_reach_up_on_the_same_var_refuses(tmp_path: Path) -> None:
    """Two `reach up` on one var/ would run two beats (every schedule twice); the second must refuse and say
    which process holds var/."""
    with reach_up(tmp_path, two_free_ports()) as first:
        first.wait_up()
        with reach_up(tmp_path, two_free_ports()) as second:
            try:
                code = second.finish(timeout=30)
            except subprocess.TimeoutExpired:
                pytest.fail(f"a second reach up on the same var/ kept running:\n{second.output}")
            assert code != 0, second.output
            assert f"pid {first.process.pid}" in second.output, second.output
            assert "Reach is up" not in second.output
        assert first.process.poll() is None, first.output


@pytest.mark.timeout(120)
def test_reach_up_with_its_port_taken_exits_non_zero(tmp_path: Path) -> None:
    """Something else listening on PORT: `reach up` says so and exits non-zero instead of announcing a
    receiver that is not its own."""
    port = two_free_ports()
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", port))
        holder.listen()
        with reach_up(tmp_path, port) as up:
            try:
                code = up.finish(timeout=60)
            except subprocess.TimeoutExpired:
                pytest.fail(f"reach up kept running with its port taken:\n{up.output}")
        assert code != 0, up.output
        assert "Reach is up" not in up.output, up.output
        assert str(port) in up.output, up.output


def worker_main(up: Up) -> psutil.Process | None:
    """The Celery worker's main process `reach up` started (None if it has none running)."""
    for child in psutil.Process(up.process.pid).children():
        with suppress(psutil.Error):
            if child.status() != psutil.STATUS_ZOMBIE and "worker" in child.cmdline() and "--beat" in child.cmdline():
                return child
    return None


@pytest.mark.timeout(240)
def test_a_worker_that_dies_is_started_again_and_the_rest_runs_on(tmp_path: Path) -> None:
    """A worker that stops by itself (kombu 5.7 stopped one that lost Redis with a task in flight:
    shared/kombu_fix.py) is started again, as compose's restart policy does; the receiver runs on."""
    worker_log = tmp_path / "var" / "worker.log"
    with reach_up(tmp_path, two_free_ports()) as up:
        up.wait_up()
        wait_for(lambda: b" ready." in worker_log.read_bytes(), timeout=60, interval=0.3, what="the worker ready")
        first = worker_main(up)
        assert first is not None
        os.killpg(first.pid, signal.SIGKILL)  # the worker and its pool, at once
        wait_for(
            lambda: worker_log.read_bytes().count(b" ready.") == 2 or up.process.poll() is not None,
            timeout=90,
            interval=0.3,
            what="the worker started again, or reach up to end",
        )
        assert up.process.poll() is None, up.output
        again = worker_main(up)
        assert again is not None and again.pid != first.pid
        assert "worker exited (-9)" in up.output and "starting the worker again" in up.output, up.output


def test_a_worker_that_keeps_dying_is_not_started_again_endlessly() -> None:
    restarts = Restarts(limit=2, window_seconds=60)
    assert [restarts.allow() for _ in range(3)] == [True, True, False]


@pytest.mark.timeout(180)
def test_reach_up_ends_non_zero_when_its_receiver_dies(tmp_path: Path) -> None:
    """A receiver that dies is not started again: `reach up` stops the rest and exits non-zero, so a service
    manager or script running it sees a failure, not a clean stop."""
    with reach_up(tmp_path, two_free_ports()) as up:
        up.wait_up()
        (receiver,) = [p for p in psutil.Process(up.process.pid).children() if "web.serve" in p.cmdline()]
        os.killpg(receiver.pid, signal.SIGKILL)
        try:
            code = up.finish(timeout=60)
        except subprocess.TimeoutExpired:
            pytest.fail(f"reach up kept running without its receiver:\n{up.output}")
    assert "web exited (-9)" in up.output, up.output
    assert code != 0, up.output
