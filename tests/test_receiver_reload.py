"""The production receiver's worker replaced (one worker process by default, reach_cli/processes.py): at a SIGHUP
granian starts a new worker before it stops the old one, and when the worker dies, connections wait in the main
process's listening socket for the next one; callbacks posted meanwhile are answered and queued, none refused, and
none answered 200 is lost."""

from __future__ import annotations

import signal
import threading
from pathlib import Path

import psutil
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
                self.answers.append(f"{type(exc).__name__}: {exc}")

    def answered_more_than(self, count: int) -> bool:
        return len(self.answers) > count


def _post_through_a_sighup(tmp_path: Path, keep_alive: bool) -> list[int | str]:
    """Post DLRs before, during and after a SIGHUP's replacement of the receiver's worker; their answers."""
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
    return poster.answers


def test_a_sighup_replaces_the_worker_refusing_and_losing_no_callback(
    environment: None, clean: None, redis_client: redis_lib.Redis, tmp_path: Path
) -> None:
    """Each post on a connection of its own, as AT's arrive: every one answered 200 and queued."""
    answers = _post_through_a_sighup(tmp_path, keep_alive=False)
    assert set(answers) == {200}, [a for a in answers if a != 200][:5]
    assert redis_client.llen(INBOX) == len(answers)


def test_on_a_kept_alive_connection_a_sighup_fails_a_post_at_most_never_answers_one_it_lost(
    environment: None, clean: None, redis_client: redis_lib.Redis, tmp_path: Path
) -> None:
    """All posts on one kept-alive connection: the old worker closes it once idle, and a post sent at that very
    moment meets the close (HTTP/1.1's own race, RFC 9112 §9.3.1: a client retries only idempotent requests by
    itself; seen once in a full run under load). That post fails at the client, which knows to post it again;
    it is never answered 200 unqueued, and never answered anything but 200."""
    answers = _post_through_a_sighup(tmp_path, keep_alive=True)
    answered = answers.count(200)
    failed = [a for a in answers if a != 200]
    assert all(isinstance(a, str) and a.startswith("ConnectionError") for a in failed), failed
    assert len(failed) <= 2, failed
    assert answered <= redis_client.llen(INBOX) <= len(answers)  # every 200 queued; a failed post may be too


ROTATED_TOKEN = "test-rotated-webhook-token-7f3e1a"


def _receiver_reading_dot_env(tmp_path: Path) -> tuple[ServiceProcess, Path, int]:
    """The production receiver reading WEBHOOK_TOKEN from a project's .env (REACH_HOME), not its environment:
    the receiver, that .env and its port."""
    home = tmp_path / "home"
    home.mkdir()
    env_file = home / ".env"
    env_file.write_text(f"WEBHOOK_TOKEN={WEBHOOK_TOKEN}\n")
    port = free_port()
    env = {key: value for key, value in command_env(REACH_HOME=str(home)).items() if key != "WEBHOOK_TOKEN"}
    web = ServiceProcess(tmp_path, "web", processes.receiver(f"127.0.0.1:{port}"), env, ready=b"Started worker")
    return web, env_file, port


def test_a_sighup_makes_the_receiver_read_a_rotated_webhook_token(
    environment: None, clean: None, tmp_path: Path
) -> None:
    """The operator rotates AT's callback token: the new one joins WEBHOOK_TOKEN in the project's .env, the
    receiver gets a SIGHUP, then AT's callback URL changes. Callbacks carrying the new token must be taken from
    then on, or AT's reports are refused."""
    web, env_file, port = _receiver_reading_dot_env(tmp_path)
    try:

        def post(token: str) -> int:
            url = f"http://127.0.0.1:{port}/dlr?token={token}"
            return requests.post(url, data=_dlr(1), timeout=10).status_code

        assert (post(WEBHOOK_TOKEN), post(ROTATED_TOKEN)) == (200, 403)
        env_file.write_text(f"WEBHOOK_TOKEN={ROTATED_TOKEN},{WEBHOOK_TOKEN}\n")
        web.process.send_signal(signal.SIGHUP)
        wait_for(lambda: "Stopped old worker-1" in web.log(), timeout=60, what="the old worker stopped")
        assert (post(ROTATED_TOKEN), post(WEBHOOK_TOKEN)) == (200, 200)
    finally:
        web.stop()


def test_a_sighup_with_settings_that_do_not_load_is_refused_and_the_worker_serves_on(
    environment: None, clean: None, tmp_path: Path
) -> None:
    """A typo in .env must not take the receiver down at the next SIGHUP: granian would stop the old worker
    after starting a new one that cannot start."""
    web, env_file, port = _receiver_reading_dot_env(tmp_path)
    url = f"http://127.0.0.1:{port}/dlr?token={WEBHOOK_TOKEN}"
    try:
        env_file.write_text(f"WEBHOOK_TOKEN={WEBHOOK_TOKEN}\nDRAIN_BATCH_SIZE=many\n")
        web.process.send_signal(signal.SIGHUP)
        wait_for(lambda: _reload_settled(web), timeout=60, what="the SIGHUP refused or carried out")
        answers = [_answer(url, n) for n in range(20)]
        running = web.process.poll() is None
    finally:
        web.stop()
    assert (answers, running) == ([200] * 20, True)
    assert "SIGHUP refused, the workers keep their settings" in web.log() and "DRAIN_BATCH_SIZE" in web.log()
    assert "Respawning worker-1" not in web.log()


def _reload_settled(web: ServiceProcess) -> bool:
    log = web.log()
    return "SIGHUP refused" in log or "Stopped old worker-1" in log or web.process.poll() is not None


def _answer(url: str, n: int) -> int | str:
    try:
        return requests.post(url, data=_dlr(n), timeout=10).status_code
    except requests.RequestException as exc:
        return type(exc).__name__


def test_a_worker_that_dies_leaves_callbacks_waiting_for_the_next_one_not_refused(
    environment: None, clean: None, redis_client: redis_lib.Redis, tmp_path: Path
) -> None:
    """The OOM killer takes the receiver's one worker: a callback posted before granian has started another waits
    for it, where each worker's own socket (granian's way on Linux) left the port closed, its post refused."""
    port = free_port()
    web = ServiceProcess(
        tmp_path, "web", processes.receiver(f"127.0.0.1:{port}"), command_env(), ready=b"Started worker"
    )
    url = f"http://127.0.0.1:{port}/dlr?token={WEBHOOK_TOKEN}"
    try:
        assert _answer(url, 0) == 200
        (worker,) = psutil.Process(web.process.pid).children()
        worker.kill()
        answers = [_answer(url, n) for n in range(1, 4)]
        respawned = "Respawning worker-1" in web.log()
    finally:
        web.stop()
    assert (answers, respawned) == ([200, 200, 200], True)
    assert redis_client.llen(INBOX) == 4
