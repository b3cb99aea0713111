"""AT's voice surface: `POST /call`, then each placed call played out through the voice callbacks.

Every XML answer to a live callback is parsed strictly, as AT would (`xml.etree`, root `<Response>`);
a call whose answer does not parse ends as failed (`wire.voice_final_failed`), never as answered.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from typing import Any

from flask import Blueprint, Response

from simulator import wire
from simulator.at_http import E164, check, fields, json_answer, numbers
from simulator.faults import deliver
from simulator.scenario import Rule
from simulator.state import SimState, current_state

voice_bp = Blueprint("at_voice", __name__)


@voice_bp.post("/call")
def call() -> Response:
    """AT voice call: one entry per number, then the call plays out per the scenario."""
    given = fields()
    problem = check(given, ("username", "from", "to"))
    if problem is not None:
        return problem
    state = current_state()
    at_number = str(given["from"])
    entries, queued = [], []
    for number in numbers(given["to"]):
        rule = state.scenario.rule_for(number)
        status = rule.call_status if E164.match(number) else "InvalidPhoneNumber"
        if status == "Queued":
            session_id = wire.new_session_id()
            queued.append((session_id, number, at_number, rule))
        else:
            session_id = "None"
        entries.append({"phoneNumber": number, "status": status, "sessionId": session_id})

    resp = json_answer(200, {"entries": entries, "errorMessage": "None"})
    resp.headers["X-Current-Queue-Size"] = str(len(queued))
    return deliver(resp, lambda: [schedule_call(state, *item) for item in queued])


def schedule_call(state: SimState, session_id: str, customer: str, at_number: str, rule: Rule) -> None:
    """Play out one call: answered (with a DTMF reply if asked), a single NotAnswered final, or, when
    an answer of ours does not parse, a Failed final."""

    def post_final(body: dict[str, str]) -> None:
        for _ in range(rule.duplicates):
            state.post_later(rule.call_delay, "voice", body, key=session_id)

    if not rule.answered:
        post_final(wire.voice_final_not_answered(session_id, customer, at_number, rule.voice))
        return

    def finish(reply: str | None) -> None:
        if reply is not None and xml_error(reply) is not None:
            post_final(wire.voice_final_failed(session_id, customer, at_number))
        else:
            post_final(wire.voice_final_answered(session_id, customer, at_number, rule.duration, rule.amount))

    def after_answer(reply: str | None) -> None:
        if rule.dtmf is not None and reply is not None and asks_for_digits(reply):
            digits = wire.voice_active(session_id, customer, at_number, dtmf_digits=rule.dtmf)
            state.post_later(rule.call_delay, "voice", digits, then=finish, read=read_voice_reply, key=session_id)
        else:
            finish(reply)

    live = wire.voice_active(session_id, customer, at_number)
    state.post_later(rule.call_delay, "voice", live, then=after_answer, read=read_voice_reply, key=session_id)


def _parse(reply: str) -> ET.Element:
    root = ET.fromstring(reply)
    if root.tag != "Response":
        raise ET.ParseError(f"the root element is <{root.tag}>, not <Response>")
    return root


def xml_error(reply: str) -> str | None:
    """Why AT could not read this voice answer, or None when it can."""
    try:
        _parse(reply)
    except ET.ParseError as exc:
        return str(exc)
    return None


def read_voice_reply(reply: str) -> dict[str, Any]:
    """What the simulator "played" from a voice XML reply: action names, `<Say>` texts and `<Play>` URLs."""
    try:
        root = _parse(reply)
    except ET.ParseError as exc:
        return {"xml_error": str(exc), "actions": [], "said": [], "played": []}
    actions = [child.tag for child in root]
    said = [(say.text or "").strip() for say in root.iter("Say")]
    played = [play.get("url", "") for play in root.iter("Play")]
    return {"xml_error": None, "actions": actions, "said": said, "played": played}


def asks_for_digits(reply: str) -> bool:
    try:
        return any(True for _ in _parse(reply).iter("GetDigits"))
    except ET.ParseError:
        return False
