"""Building and running a simulator: the Flask app, a background-thread server for tests, `serve()`."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Any

from flask import Flask
from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server

from simulator.control import control_bp
from simulator.dispatch import DEFAULT_MAX_PENDING, DEFAULT_SENDERS
from simulator.faults import faults_bp
from simulator.scenario import Scenario
from simulator.sms import sms_bp
from simulator.state import SimState
from simulator.user import user_bp
from simulator.voice import voice_bp

log = logging.getLogger(__name__)


def create_simulator_app(
    scenario: Scenario,
    *,
    api_key: str,
    username: str,
    callback_base_url: str | None,
    webhook_token: str | None,
    senders: int = 1,
    max_pending: int = DEFAULT_MAX_PENDING,
) -> Flask:
    """A Flask app that plays Africa's Talking per `scenario`; call `close_simulator_app` when done.

    `senders` threads post callbacks (each message's or call's in order); a send waits for its answer while
    `max_pending` callbacks are queued."""
    if not api_key:
        raise ValueError("the simulator needs the API key its clients must send")
    app = Flask("simulator")
    app.extensions["reach_simulator"] = SimState(
        scenario,
        api_key=api_key,
        username=username,
        callback_base_url=callback_base_url,
        webhook_token=webhook_token,
        senders=senders,
        max_pending=max_pending,
    )
    for blueprint in (faults_bp, sms_bp, user_bp, voice_bp, control_bp):
        app.register_blueprint(blueprint)
    app.wsgi_app = _closed_once_written(app.wsgi_app)  # type: ignore[method-assign]
    return app


def _closed_once_written(wsgi_app: Any) -> Any:
    """The app's answers closed (which starts AT's callbacks: simulator/faults.py `deliver`) as soon as
    werkzeug has written them, or failed to.

    Werkzeug's server closes an answer only after reading whatever else the client sent, and not at all when
    that read fails: a client killed right after AT answered resets its connection (its kernel does, with
    the answer unread), and the reports of an SMS AT had sent were never posted. AT's reports do not depend on
    its client's connection."""

    def app(environ: dict[str, Any], start_response: Any) -> Any:
        return _ClosedOnce(wsgi_app(environ, start_response))

    return app


class _ClosedOnce:
    """An answer closed once: when the server has iterated it whole or given up on it; its own `close()` after
    that does nothing."""

    def __init__(self, answer: Any) -> None:
        self.answer = answer
        self.closed = False

    def __iter__(self) -> Any:
        try:
            yield from self.answer
        finally:  # written whole, or the write failed (the generator is closed as the server's loop unwinds)
            self.close()

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            close = getattr(self.answer, "close", None)
            if close is not None:
                close()


def close_simulator_app(app: Flask) -> None:
    """Stop the app's callback thread and release requests held by a timeout fault."""
    app.extensions["reach_simulator"].close()


class _QuietHandler(WSGIRequestHandler):
    """No access log: tests start many simulators and the log would drown their output."""

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        pass


@dataclass
class SimulatorServer:
    """A simulator serving on a background thread; what a pytest fixture hands to tests."""

    app: Flask
    server: BaseWSGIServer
    thread: threading.Thread

    @property
    def state(self) -> SimState:
        return self.app.extensions["reach_simulator"]

    @property
    def port(self) -> int:
        return self.server.port

    @property
    def url(self) -> str:
        return f"http://{self.server.host}:{self.port}"

    def requests(self, path: str | None = None) -> list[dict[str, Any]]:
        """AT requests received so far, optionally only those to `path`."""
        return [r for r in self.state.requests() if path is None or r["path"] == path]

    def callbacks(self, kind: str | None = None) -> list[dict[str, Any]]:
        """Callback attempts so far, optionally only `"dlr"` or `"voice"`."""
        return [c for c in self.state.callbacks() if kind is None or c["kind"] == kind]

    def wait_idle(self, timeout: float = 5.0) -> bool:
        """Wait until every scheduled callback has been posted; False on timeout."""
        return self.state.dispatcher.wait_idle(timeout)

    def set_scenario(self, scenario: Scenario) -> None:
        """Replace the scenario (faults start afresh)."""
        self.state.set_scenario(scenario)

    def held(self) -> int:
        """How many requests the scenario's `hold` is holding."""
        return self.state.held()

    def release(self, count: int | None = None) -> int:
        """Let the `count` oldest held requests go (all when None)."""
        return self.state.release(count)

    def advance_clock(self, seconds: float) -> None:
        """Move the simulator's clock forward: callbacks due in between are posted now."""
        self.state.dispatcher.advance(seconds)

    def reset(self) -> None:
        """Forget requests and callbacks and drop pending callbacks."""
        self.state.reset()

    def stop(self) -> None:
        """Stop serving and stop the callback thread."""
        self.state.close()
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


def run_simulator_in_thread(
    scenario: Scenario | None = None,
    *,
    api_key: str = "sim-key",
    username: str = "sandbox",
    callback_base_url: str | None = None,
    webhook_token: str | None = None,
    host: str = "127.0.0.1",
    port: int = 0,
    senders: int = 1,
    max_pending: int = DEFAULT_MAX_PENDING,
) -> SimulatorServer:
    """Start a simulator on a background thread (port 0: a free port); `.stop()` it when done."""
    app = create_simulator_app(
        scenario or Scenario(),
        api_key=api_key,
        username=username,
        callback_base_url=callback_base_url,
        webhook_token=webhook_token,
        senders=senders,
        max_pending=max_pending,
    )
    server = make_server(host, port, app, threaded=True, request_handler=_QuietHandler)
    # A short poll interval: shutdown() waits for the serving loop to notice, up to one interval.
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="simulator-http", daemon=True
    )
    thread.start()
    return SimulatorServer(app=app, server=server, thread=thread)


def serve(
    host: str,
    port: int,
    scenario: Scenario,
    api_key: str,
    username: str,
    callback_base_url: str | None,
    webhook_token: str | None,
    *,
    fd: int | None = None,
    senders: int = DEFAULT_SENDERS,
    max_pending: int = DEFAULT_MAX_PENDING,
) -> None:
    """Run a simulator in the foreground until interrupted (on the listening socket `fd` when given)."""
    app = create_simulator_app(
        scenario,
        api_key=api_key,
        username=username,
        callback_base_url=callback_base_url,
        webhook_token=webhook_token,
        senders=senders,
        max_pending=max_pending,
    )
    server = make_server(host, port, app, threaded=True, fd=fd)
    log.info("AT simulator on http://%s:%s, callbacks to %s", host, server.port, callback_base_url or "nowhere")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        close_simulator_app(app)
        server.server_close()
