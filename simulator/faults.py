"""Injected faults, and the request log they are written into (shapes: simulator/scenario.py).

Every AT request is recorded and may draw one fault. A fault that comes *before* AT acts (an HTTP
error, a timeout) answers in place of the surface, so nothing is sent. Every other fault lets the
surface act and then spoils its answer in `deliver`: replaced by a proxy's page, relabelled, cut
short, held past the client's timeout, held while the callbacks go first, or never written at all (the
connection is shut).
"""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Callable
from http import HTTPStatus

from flask import Blueprint, Response, g, request

from simulator.at_http import fields, text_answer
from simulator.scenario import Fault
from simulator.state import current_state

log = logging.getLogger(__name__)

faults_bp = Blueprint("sim_faults", __name__)

#: akka-http's default texts (AT's server is akka-http, at-api.md §2.2) for the faults tests inject.
FAULT_BODIES = {
    429: "The user has sent too many requests in a given amount of time.",
    500: "There was an internal server error.",
    502: "The server was acting as a gateway or proxy and received an invalid response from the upstream server.",
    503: "The server was not able to produce a timely response to your request.\r\nPlease try again in a short while!",
    504: "The server was acting as a gateway or proxy and did not receive a timely response from the upstream server.",
}
#: What a proxy (nginx) in front of AT writes when it gives up on AT (at-api.md §13, "Gateways").
PROXY_STATUSES = (502, 503, 504)


def proxy_page(status: int) -> str:
    title = f"{status} {HTTPStatus(status).phrase}"
    return (
        f"<html>\r\n<head><title>{title}</title></head>\r\n<body>\r\n<center><h1>{title}</h1></center>\r\n"
        "<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n"
    )


def fault_text(status: int) -> str:
    if status in FAULT_BODIES:
        return FAULT_BODIES[status]
    # What a proxy in front of AT would write: "404 Not Found".
    try:
        return f"{status} {HTTPStatus(status).phrase}"
    except ValueError:
        return f"{status} Error"


@faults_bp.before_app_request
def _record_and_guard() -> Response | None:
    """Record every AT request; answer it in place of AT when its fault comes before AT acts."""
    if request.path.startswith("/_sim/"):
        return None
    state = current_state()
    g.sim_entry = {
        "path": request.path,
        "method": request.method,
        "form": fields(),
        "headers": {k: request.headers.get(k) for k in ("Accept", "Content-Type", "User-Agent")},
        "time": time.time(),
        "status": None,
    }
    state.record_request(g.sim_entry)
    state.wait_if_held(request.path)  # received and recorded; acted on once released
    fault = state.take_fault(request.path)
    if fault is None:
        return None
    g.sim_entry["fault"] = fault.status if fault.status is not None else "answer"
    if not fault.before_acting:
        g.sim_fault = fault  # the surface acts; `deliver` spoils its answer
        return None
    if fault.status == "timeout":
        # Hold the request past the client's read timeout; close() wakes it so shutdown is quick.
        state.stopping.wait(state.scenario.timeout_seconds)
        return text_answer(503, FAULT_BODIES[503])
    assert isinstance(fault.status, int)
    return _replacement(fault, fault.status)


@faults_bp.after_app_request
def _record_status(resp: Response) -> Response:
    entry = g.get("sim_entry")
    if entry is not None:
        entry["status"] = "reset" if g.get("sim_reset") else resp.status_code
    return resp


def deliver(resp: Response, act: Callable[[], object]) -> Response:
    """The surface's answer `resp`, with `act` (its callbacks) started as AT would: after the answer is
    written, or at once when the answer is never written. Applies the request's fault, if any."""
    fault: Fault | None = g.get("sim_fault")
    if fault is not None and fault.status == "reset":
        _act_now(act)
        _drop_connection()
        return resp
    if fault is not None and fault.status == "late":
        # AT acts now; only its answer is held (shorter than the client waits), so the callbacks come first.
        _act_now(act)
        current_state().stopping.wait(current_state().scenario.timeout_seconds)
        return resp
    if fault is not None and fault.status == "slow":
        # The request was done; only the answer comes too late. Callbacks start once it is written.
        g.sim_entry["status"] = resp.status_code
        current_state().stopping.wait(current_state().scenario.timeout_seconds)
    elif fault is not None and fault.acted:
        assert isinstance(fault.status, int)
        resp = _replacement(fault, fault.status, proxy=True)
    elif fault is not None:
        resp = _spoiled(resp, fault)
    _act_after(resp, act)
    return resp


def _replacement(fault: Fault, status: int, *, proxy: bool = False) -> Response:
    """The answer a fault gives in place of AT's: its own body, a proxy's page, or akka-http's text."""
    if fault.body is not None:
        body, content_type = fault.body, "text/plain; charset=UTF-8"
    elif proxy and status in PROXY_STATUSES:
        body, content_type = proxy_page(status), "text/html"
    else:
        body, content_type = fault_text(status), "text/plain; charset=UTF-8"
    return text_answer(status, body, fault.content_type or content_type)


def _spoiled(resp: Response, fault: Fault) -> Response:
    """AT's real answer, relabelled and/or cut short (with a Content-Length that matches the cut)."""
    if fault.truncate is not None:
        resp.set_data(resp.get_data()[: fault.truncate])
    if fault.content_type is not None:
        resp.headers["Content-Type"] = fault.content_type
    return resp


def _act_after(resp: Response, act: Callable[[], object]) -> None:
    """Start callbacks once the answer is sent, as AT does; the dispatcher counts as busy meanwhile."""
    dispatcher = current_state().dispatcher
    generation = dispatcher.hold()

    def run() -> None:
        try:
            dispatcher.run_as(generation, act)  # a reset in between drops these callbacks too
        finally:
            dispatcher.release()

    resp.call_on_close(run)


def _act_now(act: Callable[[], object]) -> None:
    dispatcher = current_state().dispatcher
    dispatcher.run_as(dispatcher.hold(), act)
    dispatcher.release()


def _drop_connection() -> None:
    """Shut the client's connection after its request was read: werkzeug then writes nothing (its write
    fails and it drops the connection quietly) and the client sees the server hang up without an answer."""
    g.sim_reset = True
    sock: socket.socket | None = request.environ.get("werkzeug.socket")
    if sock is None:
        raise RuntimeError("a reset fault needs werkzeug's server (environ['werkzeug.socket'])")
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError as exc:  # the client is already gone
        log.info("reset fault: %s", exc)
