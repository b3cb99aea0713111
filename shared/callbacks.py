"""AT's callbacks as frozen dataclasses, parsed from form or JSON fields by one helper.

The receiver parses to validate (a 400 names the field as AT spells it); the drain task parses the same
fields again to apply them, so both sides share one definition. Every value is bounded here, so nothing
the receiver accepted can fail to fit a column later.
"""

from __future__ import annotations

import dataclasses
import functools
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, TypeVar

from shared.numbers import bounded_decimal, bounded_int
from shared.phone import InvalidPhone, normalise_phone
from shared.status_policy import Kind, canonical


class BadCallback(ValueError):
    """A callback that is malformed or incomplete; the message names the problem."""


def _at(name: str, *, required: bool = False, max_len: int = 64) -> Any:
    # Defaults keep the constructor usable from code; `parse` is what enforces `required`.
    default = "" if required else None
    return field(default=default, metadata={"at": name, "required": required, "max_len": max_len})


T = TypeVar("T")


def parse(cls: type[T], fields: Mapping[str, Any]) -> T:
    """Build `cls` from AT's field names; `BadCallback` for a missing, empty or oversized field."""
    values: dict[str, str | None] = {}
    for name, at_name, required, max_len in _specs(cls):
        value = _clean(fields.get(at_name), at_name)
        if required and not value:
            raise BadCallback(f"missing field: {at_name}")
        if value is not None and len(value) > max_len:
            raise BadCallback(f"field too long: {at_name} (at most {max_len} characters)")
        values[name] = value
    obj = cls(**values)
    validate = getattr(obj, "validate", None)
    if validate is not None:
        validate()
    return obj


@functools.cache
def _specs(cls: type) -> tuple[tuple[str, str, bool, int], ...]:
    """Each field's (name, AT's name, required, max length), read once per class: the receiver parses every
    callback."""
    return tuple(
        (spec.name, spec.metadata["at"], spec.metadata["required"], spec.metadata["max_len"])
        for spec in dataclasses.fields(cls)
    )


def _clean(raw: Any, at_name: str) -> str | None:
    if type(raw) is str and raw.isascii() and "\x00" not in raw:
        return raw.strip()  # nothing `storable` would replace (an ASCII string has no surrogates): the usual case
    if raw is None:
        return None
    if isinstance(raw, bool | int | float):
        raw = str(int(raw) if isinstance(raw, bool) else raw)
    if not isinstance(raw, str):
        raise BadCallback(f"field must be a string: {at_name}")
    return storable(raw).strip()


#: What Postgres text and JSONB cannot hold: NUL, and lone surrogates (from JSON `\ud800` escapes).
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def storable(text: str) -> str:
    """`text` with what Postgres cannot store replaced by U+FFFD; everything else (emoji, quotes,
    SQL-looking text) is kept verbatim."""
    if text.isascii() and "\x00" not in text:
        return text  # nothing to replace (an ASCII string has no surrogates): the usual case, without the pattern
    return _UNSTORABLE.sub("\ufffd", text)


def storable_fields(fields: Mapping[str, Any]) -> dict[str, str]:
    """A callback's fields as the inbox keeps them: text, storable, the absent ones left out."""
    return {storable(k): storable(str(v)) for k, v in fields.items() if v is not None}


#: A Kenyan number already in E.164: `normalise_phone` gives it back unchanged when it is valid (Kenya's national
#: prefix, the only thing parsing could strip, is a leading 0) and `phone_or_raw` keeps it as sent when it is
#: not, so neither needs phonenumbers (~30 µs a number, 12 % of the drain's CPU; tests/test_callbacks_phone.py).
_KENYAN_E164 = re.compile(r"\+254[1-9][0-9]{8}")


def phone_or_raw(raw: str | None) -> str | None:
    """E.164 when the number parses (AT sends E.164), else the value as sent, for the audit trail."""
    if not raw:
        return None
    if _KENYAN_E164.fullmatch(raw):
        return raw
    try:
        return normalise_phone(raw, "KE")
    except InvalidPhone:
        return raw[:20]


def to_int(raw: str | None) -> int | None:
    """A count or duration; None when absent, unreadable or absurd (`shared.numbers` says why bounded)."""
    return bounded_int(raw) if raw else None


def to_decimal(raw: str | None) -> Decimal | None:
    """AT amounts: `"0"`, `"147.440"`, or `"KES 0.8000"` (currency first); None as `to_int`."""
    if not raw or raw == "None":
        return None
    words = raw.split()
    return bounded_decimal(words[-1]) if words else None


@dataclass(frozen=True)
class Dlr:
    """SMS delivery report (at-api.md §3). `phoneNumber` is optional: the report is applied by its `id`
    (courier's AT handler tests post only `id` and `status`, at-api.md §13); an id no message has is kept
    unmatched and changes nothing."""

    id: str = _at("id", required=True)
    status: str = _at("status", required=True, max_len=40)
    phone_number: str | None = _at("phoneNumber", max_len=40)
    network_code: str | None = _at("networkCode", max_len=10)
    failure_reason: str | None = _at("failureReason", max_len=60)
    retry_count: str | None = _at("retryCount", max_len=10)

    def __post_init__(self) -> None:
        # AT's words in the policy table's spelling (`FAILED` is `Failed`), so that is what Postgres keeps.
        object.__setattr__(self, "status", canonical(Kind.DLR, self.status))
        if self.failure_reason:
            object.__setattr__(self, "failure_reason", canonical(Kind.FAILURE, self.failure_reason))


@dataclass(frozen=True)
class IncomingSms:
    """Two-way SMS from a customer (at-api.md §4)."""

    from_: str = _at("from", required=True, max_len=40)
    to: str = _at("to", required=True, max_len=20)
    id: str = _at("id", required=True, max_len=100)
    text: str | None = _at("text", max_len=2000)
    date: str | None = _at("date", max_len=40)
    link_id: str | None = _at("linkId", max_len=100)
    network_code: str | None = _at("networkCode", max_len=10)

    def validate(self) -> None:
        _require_phone(self.from_, "from")


@dataclass(frozen=True)
class VoiceEvent:
    """A voice callback (at-api.md §5.2): live (`isActive=1`) or final (`isActive=0`)."""

    session_id: str = _at("sessionId", required=True)
    is_active: str = _at("isActive", required=True, max_len=5)
    direction: str | None = _at("direction", max_len=10)
    caller_number: str | None = _at("callerNumber", max_len=40)
    destination_number: str | None = _at("destinationNumber", max_len=40)
    dtmf_digits: str | None = _at("dtmfDigits", max_len=40)
    recording_url: str | None = _at("recordingUrl", max_len=1000)
    duration_in_seconds: str | None = _at("durationInSeconds", max_len=20)
    currency_code: str | None = _at("currencyCode", max_len=3)
    amount: str | None = _at("amount", max_len=30)
    call_session_state: str | None = _at("callSessionState", max_len=40)
    status: str | None = _at("status", max_len=40)
    hangup_cause: str | None = _at("hangupCause", max_len=60)

    def __post_init__(self) -> None:
        if self.hangup_cause:  # in the policy table's spelling, as for `Dlr`
            object.__setattr__(self, "hangup_cause", canonical(Kind.HANGUP, self.hangup_cause))

    def validate(self) -> None:
        if self.is_active not in {"0", "1", "true", "false"}:
            raise BadCallback("field isActive must be 0 or 1")

    @property
    def live(self) -> bool:
        return self.is_active in {"1", "true"}

    @property
    def event_key(self) -> str:
        """One step of one call: the same step posted twice is one event."""
        parts = ("1" if self.live else "0", self.call_session_state, self.status, self.dtmf_digits)
        return ":".join(part or "" for part in parts)


@dataclass(frozen=True)
class UssdStep:
    """One USSD request (at-api.md §6); `text` is every input so far joined by `*`."""

    session_id: str = _at("sessionId", required=True, max_len=100)
    phone_number: str = _at("phoneNumber", required=True, max_len=40)
    text: str | None = _at("text", max_len=500)
    service_code: str | None = _at("serviceCode", max_len=40)
    network_code: str | None = _at("networkCode", max_len=10)

    def validate(self) -> None:
        _require_phone(self.phone_number, "phoneNumber")


def _require_phone(raw: str, at_name: str) -> None:
    try:
        normalise_phone(raw, "KE")
    except InvalidPhone as exc:
        raise BadCallback(f"bad phone number in {at_name}: {exc}") from None


#: The inbox `kind` of each callback class.
KINDS: dict[str, type] = {"dlr": Dlr, "sms": IncomingSms, "voice": VoiceEvent, "ussd": UssdStep}
