"""The simulator at a million messages: bounded logs, a bounded callback queue, callbacks posted in parallel.

A cycle of a million contacts sends a million SMS through the simulator and gets a million delivery reports
back from it: the simulator must neither keep every request and callback in memory nor post them one
answer at a time.
"""

from __future__ import annotations

import socket
import threading
from collections import defaultdict
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from werkzeug.serving import make_server
from werkzeug.wrappers import Request, Response

from simulator import Rule, Scenario, SimulatorServer, run_simulator_in_thread
from tests.conftest import wait_for
from tests.sim_fixtures import SIM_KEY, Receiver, _Quiet

NUMBERS = [f"+2547110000{i:02d}" for i in range(8)]


def send(sim: SimulatorServer, to: list[str]) -> requests.Response:
    form = {"username": "sandbox", "to": ",".join(to), "message": "hello"}
    return requests.post(f"{sim.url}/version1/messaging", data=form, headers={"apiKey": SIM_KEY}, timeout=30)


class SlowReceiver:
    """Holds each callback until a second one is in flight (or 5 s pass): shows whether posts overlap."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self.in_flight = 0
        self.most_at_once = 0
        self.reports: dict[str, list[str]] = defaultdict(list)
        self._server = make_server("127.0.0.1", 0, self._wsgi, threaded=True, request_handler=_Quiet)
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.port}"

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)

    def _wsgi(self, environ: dict[str, Any], start_response: Any) -> Any:
        form = Request(environ).form
        with self._cond:
            self.in_flight += 1
            self.most_at_once = max(self.most_at_once, self.in_flight)
            self._cond.notify_all()
            self._cond.wait_for(lambda: self.most_at_once >= 2, timeout=5)
            self.reports[form["id"]].append(form["status"])
            self.in_flight -= 1
        return Response("", status=200)(environ, start_response)


@pytest.fixture
def hooks() -> Iterator[Receiver]:
    receiver = Receiver()
    yield receiver
    receiver.stop()


def test_the_request_and_callback_logs_keep_only_the_most_recent_entries(
    hooks: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("simulator.state.LOG_LIMIT", 3, raising=False)
    sim = run_simulator_in_thread(Scenario(), api_key=SIM_KEY, callback_base_url=hooks.url)
    try:
        for number in NUMBERS[:5]:
            assert send(sim, [number]).status_code == 201
        assert sim.wait_idle(10)
        assert len(hooks.posts("/dlr")) == 10  # every report was posted: only the log forgot the oldest
        assert [r["form"]["to"] for r in sim.requests()] == NUMBERS[2:5]
        assert [c["form"]["phoneNumber"] for c in sim.callbacks()] == [NUMBERS[3], NUMBERS[4], NUMBERS[4]]
    finally:
        sim.stop()


def test_callbacks_are_posted_several_at_once_each_messages_in_order() -> None:
    receiver = SlowReceiver()
    sim = run_simulator_in_thread(Scenario(), api_key=SIM_KEY, callback_base_url=receiver.url, senders=4)
    try:
        assert send(sim, NUMBERS).status_code == 201
        assert sim.wait_idle(30)
        assert receiver.most_at_once >= 2
        assert len(receiver.reports) == len(NUMBERS)
        assert all(statuses == ["Sent", "Success"] for statuses in receiver.reports.values())
    finally:
        sim.stop()
        receiver.stop()


def test_a_send_waits_for_its_answer_while_the_callback_queue_is_full(hooks: Receiver) -> None:
    late = Scenario(default=Rule(delay=3600))  # reports due in 1 h and 2 h: they stay queued
    sim = run_simulator_in_thread(late, api_key=SIM_KEY, callback_base_url=hooks.url, max_pending=4)
    answers: list[requests.Response] = []
    third = threading.Thread(target=lambda: answers.append(send(sim, [NUMBERS[2]])))
    try:
        assert send(sim, NUMBERS[:2]).status_code == 201
        wait_for(lambda: sim.state.dispatcher.stats()["queued"] == 4, what="4 reports queued")
        third.start()
        wait_for(lambda: sim.state.dispatcher.stats()["waiting_for_room"] == 1, what="the third send waiting")
        assert answers == []
        sim.advance_clock(3600)  # the two "Sent" reports go: room for the third send's
        third.join(10)
        assert [a.status_code for a in answers] == [201]
        # Two "Success" left and the third send's two: the queue holds what was due, no more.
        wait_for(lambda: sim.state.dispatcher.stats()["queued"] == 4, what="the two Sent reports posted")
    finally:
        sim.stop()
        third.join(10)


class OneAnswerPerConnection:
    """Answers each connection's first post with keep-alive, then closes it, as a receiver whose keep-alive
    timeout ran out between two callbacks does."""

    def __init__(self) -> None:
        self.posts = 0
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._listener.getsockname()[1]}"

    def stop(self) -> None:
        self._listener.close()

    def _serve(self) -> None:
        while True:
            try:
                connection, _ = self._listener.accept()
            except OSError:
                return
            with connection:
                request = connection.recv(65536)
                if request.startswith(b"POST"):
                    self.posts += 1
                    connection.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: keep-alive\r\n\r\n")


def test_a_callback_on_a_connection_the_receiver_closed_goes_out_on_a_new_one() -> None:
    receiver = OneAnswerPerConnection()
    one_report = Scenario(default=Rule(dlr=(("Success", None),)))
    sim = run_simulator_in_thread(one_report, api_key=SIM_KEY, callback_base_url=receiver.url)
    try:
        for number in NUMBERS[:2]:
            assert send(sim, [number]).status_code == 201
            assert sim.wait_idle(10)
        assert [(c["attempt"], c["status"], c["error"]) for c in sim.callbacks()] == [(1, 200, None), (1, 200, None)]
        assert receiver.posts == 2
    finally:
        sim.stop()
        receiver.stop()
