"""AT's answers as Reach reads them: frozen dataclasses, and the parsers of AT's JSON (at-api.md §2.2, §5.1).

`shared.at_client` decides *whether* an answer is AT's JSON (the one classification); this module only
reads one that is. Its parsers raise KeyError/TypeError/ValueError on entries they cannot read, which
the client turns into "maybe sent".
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from shared.numbers import bounded_decimal

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SmsRecipient:
    """One recipient entry of an SMS send answer (at-api.md §2.2)."""

    number: str
    status_code: int
    status: str
    message_id: str | None  # None when AT says "None": nothing was sent, no delivery report will come
    cost: Decimal | None
    currency: str | None


@dataclass(frozen=True)
class SmsSendResult:
    """AT's answer to a send: the summary line, and one entry per recipient (none on a request error)."""

    summary: str
    recipients: list[SmsRecipient]


@dataclass(frozen=True)
class CallEntry:
    """One number of a call request: `Queued` with a session id, or an error status."""

    phone_number: str
    status: str
    session_id: str | None


@dataclass(frozen=True)
class CallResult:
    """AT's answer to a call request; `error_message` is set only when the whole request failed."""

    entries: list[CallEntry]
    error_message: str | None


_COST = re.compile(r"^\s*([A-Z]{3})\s+(-?\d+(?:\.\d+)?)\s*$")


def parse_cost(text: object) -> tuple[str | None, Decimal | None]:
    """AT's cost string as (currency, amount): "KES 0.8000" -> ("KES", 0.8000), "0" -> (None, 0)."""
    if text is None:
        return None, None
    match = _COST.match(str(text))
    if match:
        return match.group(1), bounded_decimal(match.group(2))
    amount = bounded_decimal(str(text))  # bounded: AT's text may hold any exponent (shared/numbers.py)
    if amount is None:
        log.warning("unreadable cost %r", text)
    return None, amount


def _none_word(value: object) -> str | None:
    """AT writes a missing id as the string "None"."""
    return None if value is None or value == "None" else str(value)


def sms_result(answer: dict[str, Any]) -> SmsSendResult:
    """A send answer: `{"SMSMessageData": {"Message": ..., "Recipients": [...]}}`."""
    data = answer["SMSMessageData"]
    recipients = [_recipient(raw) for raw in data.get("Recipients") or []]
    return SmsSendResult(summary=str(data.get("Message", "")), recipients=recipients)


def _recipient(raw: dict[str, Any]) -> SmsRecipient:
    currency, cost = parse_cost(raw.get("cost"))
    return SmsRecipient(
        number=str(raw["number"]),
        status_code=int(raw["statusCode"]),
        status=str(raw.get("status", "")),
        message_id=_none_word(raw.get("messageId")),
        cost=cost,
        currency=currency,
    )


def call_result(answer: dict[str, Any]) -> CallResult:
    """A call answer: `{"entries": [...], "errorMessage": "None"}`."""
    entries = [
        CallEntry(
            phone_number=str(raw["phoneNumber"]),
            status=str(raw["status"]),
            session_id=_none_word(raw.get("sessionId")),
        )
        for raw in answer.get("entries") or []
    ]
    return CallResult(entries=entries, error_message=_none_word(answer.get("errorMessage")))
