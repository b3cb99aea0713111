"""SIGHUP to the production receiver (one worker process by default, reach_cli/processes.py): granian starts a
new worker before it stops the old one, so callbacks posted all through the replacement are each answered
200 and queued; none is refused or dropped while, for a moment, one process serves them all."""

from __future__ import annotations

import signal
import threading
from pathlib import Path

import pytest
import redis as redis_lib
import requests

from reach_cli import processes
from shared.inbox import INBOX
from tests.conftest import WEBHOOK_TOKEN, wait_for
from tests.services import ServiceProcess, command_env, free_port


def _dlr(n: int) -> dict[str, str]:
    return {"id": f"ATXid_reload_{n}", "status": "Success", "phoneNumber": "+254711000001", "networkCode": "63902"}


class _Poster:
    """Posts DLRs one after another until stopped, each on a new connection or all on one kept alive; keeps each
    answer's status, or the name of the error that took its place."""

    def __init__(self, port: int, keep_alive: bool) -> None:
        self.url = f"http://127.0.0.1:{port}/dlr?token={WEBHOOK_TOKEN}"
        self.session = requests.Session()
        self.headers = {} if keep_alive else {"Connection": "close"}
        self.answers: list[int | str] = []
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._post_until_stopped, daemon=True)

    def _post_until_stopped(self) -> None:
        n = 0
        while not self.stopping.is_set():
            n += 1
            try:
                answer = self.session.post(self.url, data=_dlr(n), headers=self.headers, timeout=15)
                self.answers.append(answer.status_code)
            except requests.RequestException as exc:
                self.answers.append(type(exc).__name__)

    def answered_more_than(self, count: int) -> bool:
        return len(self.answers) > count


@pytest.mark.parametrize("keep_alive", [False, True], ids=["a-connection-each", "one-kept-alive"])
def test_a_sighup_replaces_the_worker_without_refusing_or_losing_a_callback(
    keep_alive: bool, environment: None, clean: None, redis_client: redis_lib.Redis, tmp_path: Path
) -> None:
    port = free_port()
    web = ServiceProcess(
        tmp_path, "web", processes.receiver(f"127.0.0.1:{port}"), command_env(), ready=b"Started worker"
    )
    poster = _Poster(port, keep_alive)
    try:
        poster.thread.start()
        wait_for(lambda: poster.answered_more_than(20), timeout=30, what="callbacks answered before the SIGHUP")
        web.process.send_signal(signal.SIGHUP)
        wait_for(lambda: "Stopped old worker-1" in web.log(), timeout=60, what="the old worker stopped")
        after = len(poster.answers)
        wait_for(lambda: poster.answered_more_than(after + 20), timeout=30, what="the new worker answering")
    finally:
        poster.stopping.set()
        poster.thread.join(timeout=20)
        web.stop()
    assert "Respawning worker-1" in web.log()
    assert set(poster.answers) == {200}, [a for a in poster.answers if a != 200][:5]
    assert redis_client.llen(INBOX) == len(poster.answers)
