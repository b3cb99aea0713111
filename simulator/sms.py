"""AT's SMS surface: `POST /version1/messaging`, then each accepted message's delivery reports."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from flask import Blueprint, Response

from shared.windows import open_at, parse_window, zone_of
from simulator import wire
from simulator.at_http import E164, check, fields, json_answer, numbers
from simulator.faults import deliver
from simulator.scenario import ACCEPTED_SEND_STATUSES, SEND_STATUS_NAMES, Rule
from simulator.state import SimState, current_state

SMS_COST = Decimal("0.8000")
CURRENCY = "KES"
#: The statusCode AT gives a number it cannot send to (at-api.md §2.2).
INVALID_PHONE_NUMBER = 403
#: The statusCode of a send refused in a number's `dnd_hours` (at-api.md §2.2).
DO_NOT_DISTURB = 409

sms_bp = Blueprint("at_sms", __name__)


@sms_bp.post("/version1/messaging")
def messaging() -> Response:
    """AT bulk SMS: one recipient entry per number, then delivery reports per the scenario."""
    given = fields()
    problem = check(given, ("username", "to", "message"))
    if problem is not None:
        return problem
    state = current_state()
    state.dispatcher.wait_for_room()  # AT's queue is full: it answers once it has room for more reports
    scenario = state.scenario
    sender = given.get("from")
    if scenario.allowed_sender_ids is not None and sender and sender not in scenario.allowed_sender_ids:
        return json_answer(201, {"SMSMessageData": {"Message": "InvalidSenderId", "Recipients": []}})

    enqueue = str(given.get("enqueue", "")) == "1"
    to = numbers(given["to"])
    recipients, accepted = [], []
    for number in to:
        rule = scenario.rule_for(number)
        code = _send_status(number, rule, enqueue, state.wall_clock())
        if code in ACCEPTED_SEND_STATUSES:
            message_id = wire.new_message_id()
            accepted.append((message_id, number, rule))
            recipients.append(_recipient(code, number, "Success", f"{CURRENCY} {SMS_COST}", message_id))
        else:
            recipients.append(_recipient(code, number, SEND_STATUS_NAMES[code], "0", "None"))

    total = f"{CURRENCY} {SMS_COST * len(accepted)}" if accepted else "0"
    summary = f"Sent to {len(accepted)}/{len(to)} Total Cost: {total}"
    # A DoNotDisturbRejection turns the whole answer into HTTP 409 (at-api.md §2.2, S10).
    status = 409 if any(r["statusCode"] == 409 for r in recipients) else 201
    resp = json_answer(status, {"SMSMessageData": {"Message": summary, "Recipients": recipients}})
    return deliver(resp, lambda: [schedule_dlrs(state, *item) for item in accepted])


def _send_status(number: str, rule: Rule, enqueue: bool, at: datetime) -> int:
    if not E164.match(number):
        return INVALID_PHONE_NUMBER
    if rule.dnd_hours is not None and open_at(parse_window(rule.dnd_hours), zone_of(number), at):
        return DO_NOT_DISTURB
    return rule.send_status or (102 if enqueue else 101)


def _recipient(code: int, number: str, status: str, cost: str, message_id: str) -> dict[str, Any]:
    return {"statusCode": code, "number": number, "status": status, "cost": cost, "messageId": message_id}


def schedule_dlrs(state: SimState, message_id: str, number: str, rule: Rule) -> None:
    """Post a message's delivery reports: in order (or shuffled), `delay` apart, duplicated; during its
    network's outage, the outage's reports."""
    outage = state.scenario.outage_for(rule, state.dispatcher.now() - state.scenario_set_at)
    dlr = outage.dlr if outage is not None else rule.dlr
    steps = state.shuffled(list(dlr)) if rule.shuffle else list(dlr)
    for index, (status, reason) in enumerate(steps, start=1):
        body = wire.dlr(message_id, status, number, rule.network_code, failure_reason=reason)
        for _ in range(rule.duplicates):
            state.post_later(rule.delay * index, "dlr", body, key=message_id)
