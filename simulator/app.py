"""A loopback Africa's Talking: the SMS and voice APIs, their callbacks, and a control API for tests.

The AT surface is wire-exact where Reach or the SDK depends on it (at-api.md §11): `POST
/version1/messaging` answers 201 with `Content-Type: application/json` exactly (the SDK returns a str
for anything else), `POST /call` answers 200, a bad `apiKey` gets AT's 401 text. What happens next
(delivery reports, voice callbacks, faults) follows a `Scenario`. Callbacks are posted form-encoded by
one dispatcher thread to `callback_base_url + "/dlr"` and `+ "/voice"`, with `?token=` when given.

Under `/_sim/` a control API lets tests look inside: `GET requests`, `GET callbacks`, `GET idle`,
`POST scenario` (JSON, see `simulator.scenario`), `POST reset`. `run_simulator_in_thread()` starts
one on a free port for a pytest fixture; `serve()` runs one in the foreground.
"""

from __future__ import annotations

import hmac
import json
import logging
import random
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from http import HTTPStatus
from typing import Any

import requests
from flask import Blueprint, Flask, Response, current_app, g, jsonify, request
from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server

from simulator import wire
from simulator.dispatch import Dispatcher
from simulator.scenario import ACCEPTED_SEND_STATUSES, SEND_STATUS_NAMES, Fault, Rule, Scenario

log = logging.getLogger(__name__)

SMS_COST = Decimal("0.8000")
CURRENCY = "KES"
#: Attempts per callback before the simulator gives up on it, and the first back-off (doubling).
CALLBACK_ATTEMPTS = 4
CALLBACK_BACKOFF_S = 0.05
CALLBACK_TIMEOUT_S = (2.0, 5.0)

AUTH_FAILED = "The supplied authentication is invalid"
#: akka-http's default texts (AT's server is akka-http, at-api.md §2.2) for the faults tests inject.
FAULT_BODIES = {
    429: "The user has sent too many requests in a given amount of time.",
    500: "There was an internal server error.",
    502: "The server was acting as a gateway or proxy and received an invalid response from the upstream server.",
    503: "The server was not able to produce a timely response to your request.\r\nPlease try again in a short while!",
    504: "The server was acting as a gateway or proxy and did not receive a timely response from the upstream server.",
}

at_bp = Blueprint("at", __name__)
control_bp = Blueprint("sim_control", __name__, url_prefix="/_sim")


class SimState:
    """Everything one simulator app holds: scenario, fault budget, logs and the callback dispatcher."""

    def __init__(
        self,
        scenario: Scenario,
        *,
        api_key: str,
        username: str,
        callback_base_url: str | None,
        webhook_token: str | None,
    ) -> None:
        self.api_key = api_key
        self.username = username
        self.callback_base_url = callback_base_url.rstrip("/") if callback_base_url else None
        self.webhook_token = webhook_token or None
        self.dispatcher = Dispatcher()
        self.stopping = threading.Event()
        self._lock = threading.Lock()
        self._http = requests.Session()  # used by the dispatcher thread only
        self._requests: list[dict[str, Any]] = []
        self._callbacks: list[dict[str, Any]] = []
        self.set_scenario(scenario)

    # -- scenario and logs --------------------------------------------------------------------------

    def set_scenario(self, scenario: Scenario) -> None:
        """Replace the scenario; its faults start with their full counts."""
        with self._lock:
            self.scenario = scenario
            self._faults = [[fault, fault.count] for fault in scenario.faults]
            self._rng = random.Random(scenario.seed)

    def reset(self) -> None:
        """Forget requests and callbacks, drop pending callbacks, refill the faults."""
        self.dispatcher.clear()
        with self._lock:
            self._requests.clear()
            self._callbacks.clear()
        self.set_scenario(self.scenario)

    def requests(self) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(r) for r in self._requests]

    def callbacks(self) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(c) for c in self._callbacks]

    def record_request(self, entry: dict[str, Any]) -> None:
        with self._lock:
            self._requests.append(entry)

    def take_fault(self, path: str) -> Fault | None:
        """The fault that answers this request, if any; each use spends one of its count."""
        with self._lock:
            for budget in self._faults:
                if budget[1] > 0 and budget[0].matches(path):
                    budget[1] -= 1
                    return budget[0]
        return None

    def shuffled(self, steps: list[Any]) -> list[Any]:
        """`steps` in another order (when there is one), from the scenario's seeded generator."""
        with self._lock:
            out = list(steps)
            self._rng.shuffle(out)
        if out == steps and len(set(map(repr, steps))) > 1:
            out.reverse()
        return out

    def close(self) -> None:
        """Stop the dispatcher and wake requests held by a timeout fault."""
        self.stopping.set()
        self.dispatcher.stop()
        self._http.close()

    # -- callbacks ------------------------------------------------------------------------------------

    def post_later(
        self,
        delay: float,
        kind: str,
        form: dict[str, str],
        then: Callable[[str | None], None] | None = None,
    ) -> None:
        """Post a callback after `delay` s; `then` gets the reply body (None if every attempt failed)."""
        if self.callback_base_url is None:
            return
        self.dispatcher.schedule(delay, lambda: self._post(kind, form, 1, then))

    def _post(self, kind: str, form: dict[str, str], attempt: int, then: Callable[..., None] | None) -> None:
        url = f"{self.callback_base_url}/{kind}"
        entry: dict[str, Any] = {"kind": kind, "url": url, "form": form, "attempt": attempt, "time": time.time()}
        entry.update(status=None, error=None, reply=None)
        params = {"token": self.webhook_token} if self.webhook_token else None
        try:
            resp = self._http.post(url, data=form, params=params, timeout=CALLBACK_TIMEOUT_S)
            entry.update(status=resp.status_code, reply=resp.text, url=resp.url)
        except requests.RequestException as exc:
            entry["error"] = f"{type(exc).__name__}: {exc}"
        ok = entry["status"] is not None and 200 <= entry["status"] < 300
        if kind == "voice" and ok and form.get("isActive") == "1":
            entry.update(_read_voice_reply(entry["reply"]))
        with self._lock:
            self._callbacks.append(entry)
        if not ok and attempt < CALLBACK_ATTEMPTS:
            log.info("callback %s failed (%s); retrying", url, entry["error"] or entry["status"])
            backoff = CALLBACK_BACKOFF_S * 2 ** (attempt - 1)
            self.dispatcher.schedule(backoff, lambda: self._post(kind, form, attempt + 1, then))
            return
        if not ok:
            log.warning("callback %s failed %d times; giving up", url, attempt)
        if then is not None:
            then(entry["reply"] if ok else None)

    def schedule_dlrs(self, message_id: str, number: str, rule: Rule) -> None:
        """Post a message's delivery reports: in order (or shuffled), `delay` apart, duplicated."""
        steps = self.shuffled(list(rule.dlr)) if rule.shuffle else list(rule.dlr)
        for index, (status, reason) in enumerate(steps, start=1):
            body = wire.dlr(message_id, status, number, rule.network_code, failure_reason=reason)
            for _ in range(rule.duplicates):
                self.post_later(rule.delay * index, "dlr", body)

    def schedule_call(self, session_id: str, customer: str, at_number: str, rule: Rule) -> None:
        """Play out one call: answered (with a DTMF reply if asked), or a single NotAnswered final."""
        if not rule.answered:
            final = wire.voice_final_not_answered(session_id, customer, at_number, rule.voice)
            for _ in range(rule.duplicates):
                self.post_later(rule.delay, "voice", final)
            return

        def finish(_reply: str | None) -> None:
            body = wire.voice_final_answered(session_id, customer, at_number, rule.duration, rule.amount)
            for _ in range(rule.duplicates):
                self.post_later(rule.delay, "voice", body)

        def after_answer(reply: str | None) -> None:
            if rule.dtmf is not None and reply is not None and _asks_for_digits(reply):
                digits = wire.voice_active(session_id, customer, at_number, dtmf_digits=rule.dtmf)
                self.post_later(rule.delay, "voice", digits, then=finish)
            else:
                finish(reply)

        self.post_later(rule.delay, "voice", wire.voice_active(session_id, customer, at_number), after_answer)


def _read_voice_reply(reply: str) -> dict[str, Any]:
    """What the simulator "played" from a voice XML reply: action names and `<Say>` texts."""
    try:
        root = ET.fromstring(reply)
    except ET.ParseError as exc:
        return {"xml_error": str(exc), "actions": [], "said": []}
    actions = [child.tag for child in root]
    said = [(say.text or "").strip() for say in root.iter("Say")]
    return {"xml_error": None, "actions": actions, "said": said}


def _asks_for_digits(reply: str) -> bool:
    try:
        return any(True for _ in ET.fromstring(reply).iter("GetDigits"))
    except ET.ParseError:
        return False


# -- the AT surface ------------------------------------------------------------------------------------


def _state() -> SimState:
    return current_app.extensions["reach_simulator"]


def _json_answer(status: int, body: dict[str, Any]) -> Response:
    resp = Response(json.dumps(body, separators=(",", ":")), status=status)
    # Exactly this, no charset: the SDK returns res.json() only for this exact header (at-api.md §1.5).
    resp.headers["Content-Type"] = "application/json"
    return resp


def _text_answer(status: int, text: str) -> Response:
    resp = Response(text, status=status)
    resp.headers["Content-Type"] = "text/plain; charset=UTF-8"
    return resp


def _fields() -> dict[str, Any]:
    """The request's fields: form-encoded as AT documents, or JSON (which /call also accepts)."""
    if request.is_json:
        body = request.get_json(silent=True)
        return body if isinstance(body, dict) else {}
    return request.form.to_dict()


@at_bp.before_app_request
def _record_and_guard() -> Response | None:
    """Record every AT request; answer it with an injected fault if one is due."""
    if request.path.startswith("/_sim/"):
        return None
    state = _state()
    g.sim_entry = {
        "path": request.path,
        "method": request.method,
        "form": _fields(),
        "headers": {k: request.headers.get(k) for k in ("Accept", "Content-Type", "User-Agent")},
        "time": time.time(),
        "status": None,
    }
    state.record_request(g.sim_entry)
    fault = state.take_fault(request.path)
    if fault is None:
        return None
    g.sim_entry["fault"] = fault.status
    if fault.status == "slow":
        g.sim_slow = True  # handled as usual; the answer is held in _record_status
        return None
    if fault.status == "timeout":
        # Hold the request past the client's read timeout; close() wakes it so shutdown is quick.
        state.stopping.wait(state.scenario.timeout_seconds)
        return _text_answer(503, FAULT_BODIES[503])
    return _text_answer(fault.status, _fault_text(fault.status) if fault.body is None else fault.body)


@at_bp.after_app_request
def _record_status(resp: Response) -> Response:
    entry = g.get("sim_entry")
    if entry is not None:
        entry["status"] = resp.status_code
    if g.get("sim_slow"):
        # The request was done (and its callbacks scheduled); only the answer comes too late.
        _state().stopping.wait(_state().scenario.timeout_seconds)
    return resp


def _fault_text(status: int) -> str:
    if status in FAULT_BODIES:
        return FAULT_BODIES[status]
    # What a proxy in front of AT would write: "404 Not Found".
    try:
        return f"{status} {HTTPStatus(status).phrase}"
    except ValueError:
        return f"{status} Error"


def _check(fields: dict[str, Any], required: tuple[str, ...]) -> Response | None:
    """AT's answers to a bad key or a missing field, or None when the request may proceed."""
    state = _state()
    key = request.headers.get("apiKey", "")  # werkzeug reads header names case-insensitively
    key_ok = hmac.compare_digest(key.encode(), state.api_key.encode())
    if not key_ok or fields.get("username", state.username) != state.username:
        resp = _text_answer(401, AUTH_FAILED)
        resp.headers["WWW-Authenticate"] = 'Basic realm="api",charset=UTF-8'
        return resp
    for name in required:
        if not fields.get(name):
            return _text_answer(400, f"Request is missing required form field '{name}'")
    return None


@at_bp.post("/version1/messaging")
def messaging() -> Response:
    """AT bulk SMS: one recipient entry per number, then delivery reports per the scenario."""
    fields = _fields()
    problem = _check(fields, ("username", "to", "message"))
    if problem is not None:
        return problem
    state = _state()
    scenario = state.scenario
    sender = fields.get("from")
    if scenario.allowed_sender_ids is not None and sender and sender not in scenario.allowed_sender_ids:
        return _json_answer(201, {"SMSMessageData": {"Message": "InvalidSenderId", "Recipients": []}})

    enqueue = str(fields.get("enqueue", "")) == "1"
    numbers = [n.strip() for n in str(fields["to"]).split(",") if n.strip()]
    recipients, accepted = [], []
    for number in numbers:
        rule = scenario.rule_for(number)
        code = rule.send_status or (102 if enqueue else 101)
        if code in ACCEPTED_SEND_STATUSES:
            message_id = wire.new_message_id()
            accepted.append((message_id, number, rule))
            entry = {"statusCode": code, "number": number, "status": "Success"}
            entry.update(cost=f"{CURRENCY} {SMS_COST}", messageId=message_id)
        else:
            entry = {"statusCode": code, "number": number, "status": SEND_STATUS_NAMES[code]}
            entry.update(cost="0", messageId="None")
        recipients.append(entry)

    total = f"{CURRENCY} {SMS_COST * len(accepted)}" if accepted else "0"
    summary = f"Sent to {len(accepted)}/{len(numbers)} Total Cost: {total}"
    # A DoNotDisturbRejection turns the whole answer into HTTP 409 (at-api.md §2.2, S10).
    status = 409 if any(r["statusCode"] == 409 for r in recipients) else 201
    resp = _json_answer(status, {"SMSMessageData": {"Message": summary, "Recipients": recipients}})
    _after_response(resp, lambda: [state.schedule_dlrs(*item) for item in accepted])
    return resp


@at_bp.post("/call")
def call() -> Response:
    """AT voice call: one entry per number, then the call plays out per the scenario."""
    fields = _fields()
    problem = _check(fields, ("username", "from", "to"))
    if problem is not None:
        return problem
    state = _state()
    to = fields["to"]
    numbers = [n.strip() for n in (to if isinstance(to, list) else str(to).split(",")) if n.strip()]
    at_number = str(fields["from"])
    entries, queued = [], []
    for number in numbers:
        rule = state.scenario.rule_for(number)
        if rule.call_status == "Queued":
            session_id = wire.new_session_id()
            queued.append((session_id, number, at_number, rule))
        else:
            session_id = "None"
        entries.append({"phoneNumber": number, "status": rule.call_status, "sessionId": session_id})

    resp = _json_answer(200, {"entries": entries, "errorMessage": "None"})
    resp.headers["X-Current-Queue-Size"] = str(len(queued))
    _after_response(resp, lambda: [state.schedule_call(*item) for item in queued])
    return resp


def _after_response(resp: Response, start: Callable[[], object]) -> None:
    """Start callbacks once the answer is sent, as AT does; the dispatcher counts as busy meanwhile."""
    dispatcher = _state().dispatcher
    generation = dispatcher.hold()

    def run() -> None:
        try:
            dispatcher.run_as(generation, start)  # a reset in between drops these callbacks too
        finally:
            dispatcher.release()

    resp.call_on_close(run)


# -- the control API -----------------------------------------------------------------------------------


@control_bp.get("/requests")
def sim_requests() -> Response:
    """Every AT request received, oldest first."""
    return jsonify(_state().requests())


@control_bp.get("/callbacks")
def sim_callbacks() -> Response:
    """Every callback attempt posted, with its HTTP status and, for voice, the XML reply."""
    return jsonify(_state().callbacks())


@control_bp.get("/idle")
def sim_idle() -> Response:
    """Whether every callback has been posted."""
    return jsonify({"idle": _state().dispatcher.idle()})


@control_bp.post("/scenario")
def sim_scenario() -> tuple[Response, int] | Response:
    """Replace the scenario with the JSON body."""
    try:
        scenario = Scenario.from_dict(request.get_json(force=True))
    except (ValueError, TypeError) as exc:
        return jsonify({"error": str(exc)}), 400
    _state().set_scenario(scenario)
    return jsonify({"ok": True})


@control_bp.post("/reset")
def sim_reset() -> Response:
    """Forget requests and callbacks and drop pending callbacks."""
    _state().reset()
    return jsonify({"ok": True})


# -- building and running ------------------------------------------------------------------------------


def create_simulator_app(
    scenario: Scenario,
    *,
    api_key: str,
    username: str,
    callback_base_url: str | None,
    webhook_token: str | None,
) -> Flask:
    """A Flask app that plays Africa's Talking per `scenario`; call `close_simulator_app` when done."""
    if not api_key:
        raise ValueError("the simulator needs the API key its clients must send")
    app = Flask(__name__)
    app.extensions["reach_simulator"] = SimState(
        scenario,
        api_key=api_key,
        username=username,
        callback_base_url=callback_base_url,
        webhook_token=webhook_token,
    )
    app.register_blueprint(at_bp)
    app.register_blueprint(control_bp)
    return app


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
) -> SimulatorServer:
    """Start a simulator on a background thread (port 0: a free port); `.stop()` it when done."""
    app = create_simulator_app(
        scenario or Scenario(),
        api_key=api_key,
        username=username,
        callback_base_url=callback_base_url,
        webhook_token=webhook_token,
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
) -> None:
    """Run a simulator in the foreground until interrupted."""
    app = create_simulator_app(
        scenario,
        api_key=api_key,
        username=username,
        callback_base_url=callback_base_url,
        webhook_token=webhook_token,
    )
    server = make_server(host, port, app, threaded=True)
    log.info("AT simulator on http://%s:%s, callbacks to %s", host, server.port, callback_base_url or "nowhere")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        close_simulator_app(app)
        server.server_close()
