"""The control API under `/_sim/`, for tests and operators to look inside and steer the simulator.

`GET requests`, `GET callbacks` (the most recent 10,000 of each), `GET idle`, `GET stats` (callbacks
queued and posted, sends waiting for room), `POST scenario` (JSON, see `simulator.scenario`),
`POST reset`, the clock: `GET clock`, `POST clock {"advance_seconds": N}` (callbacks due in between
are posted at once, in order), and requests the scenario holds: `GET held`, `POST release {"count": N}`
(the N oldest; no body: all).
"""

from __future__ import annotations

from flask import Blueprint, Response, jsonify, request

from simulator.scenario import Scenario
from simulator.state import current_state

control_bp = Blueprint("sim_control", __name__, url_prefix="/_sim")


@control_bp.get("/requests")
def sim_requests() -> Response:
    """Every AT request received, oldest first."""
    return jsonify(current_state().requests())


@control_bp.get("/callbacks")
def sim_callbacks() -> Response:
    """Every callback attempt posted, with its HTTP status and, for voice, the XML reply; the webhook token in
    its URL shows as `[redacted]` (anyone on loopback can read this)."""
    return jsonify(current_state().callbacks())


@control_bp.get("/idle")
def sim_idle() -> Response:
    """Whether every callback has been posted."""
    return jsonify({"idle": current_state().dispatcher.idle()})


@control_bp.get("/stats")
def sim_stats() -> Response:
    """Callbacks queued and run so far, and how long sends waited for room in the callback queue."""
    return jsonify(current_state().dispatcher.stats())


@control_bp.post("/scenario")
def sim_scenario() -> tuple[Response, int] | Response:
    """Replace the scenario with the JSON body."""
    try:
        scenario = Scenario.from_dict(request.get_json(force=True))
    except (ValueError, TypeError) as exc:
        return jsonify({"error": str(exc)}), 400
    current_state().set_scenario(scenario)
    return jsonify({"ok": True})


@control_bp.post("/reset")
def sim_reset() -> Response:
    """Forget requests and callbacks and drop pending callbacks."""
    current_state().reset()
    return jsonify({"ok": True})


@control_bp.get("/clock")
def sim_clock() -> Response:
    """How far the simulator's clock has been advanced, in seconds."""
    return jsonify({"advanced_seconds": current_state().dispatcher.offset})


@control_bp.post("/clock")
def sim_advance_clock() -> tuple[Response, int] | Response:
    """Move the simulator's clock forward by `advance_seconds`."""
    body = request.get_json(force=True, silent=True)
    seconds = body.get("advance_seconds") if isinstance(body, dict) else None
    if isinstance(seconds, bool) or not isinstance(seconds, int | float) or seconds < 0:
        return jsonify({"error": "advance_seconds: a number of seconds >= 0"}), 400
    dispatcher = current_state().dispatcher
    dispatcher.advance(float(seconds))
    return jsonify({"advanced_seconds": dispatcher.offset})


@control_bp.get("/held")
def sim_held() -> Response:
    """How many requests the scenario's `hold` is holding."""
    return jsonify({"held": current_state().held()})


@control_bp.post("/release")
def sim_release() -> tuple[Response, int] | Response:
    """Let held requests go: the `count` oldest, or all of them without a count."""
    body = request.get_json(force=True, silent=True) or {}
    count = body.get("count") if isinstance(body, dict) else None
    if count is not None and (isinstance(count, bool) or not isinstance(count, int) or count < 0):
        return jsonify({"error": "count: a whole number >= 0"}), 400
    return jsonify({"released": current_state().release(count)})
