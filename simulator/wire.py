"""AT's callback bodies, built in one place (at-api.md §3, §4, §5.2, §6, §11).

Every function returns the form fields of one callback as AT spells them, values as strings and in
AT's order, ready for `requests.post(url, data=...)` or Flask's `client.post(data=...)`. The simulator
and the tests both build bodies here, so a spelling fixed here is fixed everywhere.
"""

from __future__ import annotations

import secrets
from datetime import UTC, datetime

#: Safaricom, the most common Kenyan network code (at-api.md §3).
SAFARICOM = "63902"


def new_message_id() -> str:
    """A fresh SMS message id as AT issues them: `ATXid_` + 32 hex digits."""
    return "ATXid_" + secrets.token_hex(16)


def new_session_id() -> str:
    """A fresh voice session id as AT issues them: `ATVId_` + 32 hex digits."""
    return "ATVId_" + secrets.token_hex(16)


def _now(fmt: str) -> str:
    return datetime.now(UTC).strftime(fmt)


def dlr(
    message_id: str,
    status: str,
    phone: str,
    network_code: str = SAFARICOM,
    failure_reason: str | None = None,
    retry_count: int | None = None,
) -> dict[str, str]:
    """A delivery report; `failureReason` and `retryCount` appear only when given, as AT sends them."""
    body = {"id": message_id, "status": status, "phoneNumber": phone, "networkCode": network_code}
    if failure_reason is not None:
        body["failureReason"] = failure_reason
    if retry_count is not None:
        body["retryCount"] = str(retry_count)
    return body


def incoming_sms(
    from_: str,
    to: str,
    text: str,
    id_: str,
    link_id: str | None = None,
    date: str | None = None,
    network_code: str = SAFARICOM,
) -> dict[str, str]:
    """An incoming (two-way) SMS; `date` defaults to now in AT's `2017-05-03T06:04:45Z` form."""
    body = {"date": date or _now("%Y-%m-%dT%H:%M:%SZ"), "from": from_, "id": id_}
    if link_id is not None:
        body["linkId"] = link_id
    body.update({"text": text, "to": to, "networkCode": network_code})
    return body


def voice_active(
    session_id: str,
    caller_number: str,
    destination_number: str,
    dtmf_digits: str | None = None,
    direction: str = "Outbound",
) -> dict[str, str]:
    """A live-call callback (`isActive=1`); with `dtmf_digits` it is the reply to a `<GetDigits>`."""
    body = {
        "isActive": "1",
        "sessionId": session_id,
        "direction": direction,
        # For an outbound call callerNumber is the customer and destinationNumber is our AT number (§5.2).
        "callerNumber": caller_number,
        "destinationNumber": destination_number,
        "callSessionState": "Active",
        "callStartTime": _now("%Y-%m-%d %H:%M:%S"),
    }
    if dtmf_digits is not None:
        body["dtmfDigits"] = dtmf_digits
    return body


def voice_final_answered(
    session_id: str,
    caller: str,
    dest: str,
    duration: int = 12,
    amount: str = "1.6000",
    currency: str = "KES",
    direction: str = "Outbound",
) -> dict[str, str]:
    """The final callback (`isActive=0`) of a call that was answered and ended normally."""
    return {
        "isActive": "0",
        "sessionId": session_id,
        "direction": direction,
        "callerNumber": caller,
        "destinationNumber": dest,
        "callSessionState": "Completed",
        "status": "Success",
        "hangupCause": "NORMAL_CLEARING",
        "durationInSeconds": str(duration),
        "currencyCode": currency,
        "amount": amount,
        "recordingUrl": "",
        "callStartTime": _now("%Y-%m-%d %H:%M:%S"),
    }


def voice_final_not_answered(
    session_id: str, caller: str, dest: str, hangup_cause: str, direction: str = "Outbound"
) -> dict[str, str]:
    """The single final callback of a call that was never answered (busy, no answer, bad number...)."""
    # Field order follows AT's help-centre sample for a busy outbound call (at-api.md §5.2).
    return {
        "callSessionState": "NotAnswered",
        "hangupCause": hangup_cause,
        "direction": direction,
        "durationInSeconds": "0",
        "amount": "0",
        "callerNumber": caller,
        "destinationNumber": dest,
        "status": "NotAnswered",
        "sessionId": session_id,
        "callStartTime": "None",
        "isActive": "0",
        "currencyCode": "KES",
    }


def voice_final_failed(
    session_id: str, caller: str, dest: str, hangup_cause: str = "UNSPECIFIED", direction: str = "Outbound"
) -> dict[str, str]:
    """The final callback of a call AT could not play (its XML answer did not parse): picked up, nothing
    said, hung up. AT documents no cause for this; `UNSPECIFIED` is its "could not get a cause"."""
    ended = voice_final_answered(session_id, caller, dest, duration=0, amount="0", direction=direction)
    return {**ended, "status": "Failed", "hangupCause": hangup_cause}


def ussd(
    session_id: str,
    phone: str,
    text: str,
    service_code: str = "*384*303#",
    network_code: str = SAFARICOM,
) -> dict[str, str]:
    """A USSD session request; `text` is every input so far joined with `*` (empty at first)."""
    return {
        "sessionId": session_id,
        "serviceCode": service_code,
        "phoneNumber": phone,
        "networkCode": network_code,
        "text": text,
    }
