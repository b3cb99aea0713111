"""Operators' rules for a promotional sender id (at-api.md §13), as data: one row per country.

AT_SENDER_KIND says what AT_SENDER_ID is registered as. A `transactional` one (the default) is exempt from
these rules; a `promotional` one may send to a country's numbers only inside its `window` (in `zone`'s
wall-clock time), and, where `opt_out` is set, each SMS carries PROMOTIONAL_OPT_OUT_TEXT after the text.

The window combines with SMS_WINDOW (or the cycle's `sms_window`) through the send-window machinery
(worker/cycles/window_holds.py): an SMS waits, `waiting`, until both are open; the stricter wins. It is also
what a DoNotDisturbRejection waits for (shared/status_policy.py, `WAIT_FOR_WINDOW`), whatever the kind: AT
treating the sender id as promotional is the proof that it is.

Kenya's rule is Safaricom's, yet it is applied to every +254 number: a number keeps its prefix when it moves
network (shared/networks.py), so the prefix cannot tell a Safaricom subscriber, and the opt-out on another
network's SMS costs a few characters where a missing one breaks the rule.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Literal, Protocol
from zoneinfo import ZoneInfo

from pydantic import AfterValidator, Field

from shared import segments
from shared.windows import BadWindow, Window, next_common_opening, parse_window

SenderKind = Literal["transactional", "promotional"]
TRANSACTIONAL: SenderKind = "transactional"
PROMOTIONAL: SenderKind = "promotional"
#: Safaricom's opt-out for promotional SMS (at-api.md §13): the default of PROMOTIONAL_OPT_OUT_TEXT.
SAFARICOM_OPT_OUT = "*456*9*5#"


def _opt_out_text(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be blank: a promotional SMS to Kenya must carry the opt-out")
    return value.strip()


#: PROMOTIONAL_OPT_OUT_TEXT: not blank, and short (it is added to every promotional SMS to Kenya).
OptOutText = Annotated[str, Field(max_length=40), AfterValidator(_opt_out_text)]


class SenderSettings(Protocol):
    """The settings these rules read (shared/settings.py imports this module, so not `Settings` itself)."""

    at_sender_kind: str
    promotional_opt_out_text: str


@dataclass(frozen=True)
class CountryRule:
    """A country's rule for a promotional sender id: numbers starting `prefix` (`+` and the calling code)."""

    country: str
    prefix: str
    window: Window
    zone: ZoneInfo
    opt_out: bool
    source: str

    def __str__(self) -> str:
        return f"{self.window} ({self.zone.key}) in {self.country}"


# fmt: off
PROMOTIONAL_RULES: tuple[CountryRule, ...] = (
    CountryRule("Kenya", "+254", parse_window("08:00-18:00"), ZoneInfo("Africa/Nairobi"), opt_out=True,
                source="Safaricom: 08:00-18:00 EAT only, with the opt-out *456*9*5#"),
    CountryRule("Nigeria", "+234", parse_window("08:00-20:00"), ZoneInfo("Africa/Lagos"), opt_out=False,
                source="NCC: promotional SMS banned 20:00-08:00; AT answers 409 DoNotDisturbRejection"),
)
# fmt: on


def rule_of(phone: str) -> CountryRule | None:
    """The country rule for a number (E.164), whatever the sender kind; None where no rule is known."""
    return next((rule for rule in PROMOTIONAL_RULES if phone.startswith(rule.prefix)), None)


def limits(phone: str, kind: str) -> list[tuple[Window, ZoneInfo]]:
    """The windows a sender of `kind` must keep to for this number, besides SMS_WINDOW."""
    rule = rule_of(phone) if kind == PROMOTIONAL else None
    return [] if rule is None else [(rule.window, rule.zone)]


def applies(kind: str) -> bool:
    """Whether a sender of `kind` has any rule to keep (so planning looks at each number's country)."""
    return kind == PROMOTIONAL


def opt_out_suffix(phone: str, kind: str, opt_out_text: str) -> str:
    """What goes after the text of an SMS to this number: a blank and the opt-out, or nothing."""
    rule = rule_of(phone) if kind == PROMOTIONAL else None
    return f" {opt_out_text}" if rule is not None and rule.opt_out else ""


def windows_text(kind: str) -> str | None:
    """The promotional windows a sender of `kind` keeps, for people (`Kenya 08:00-18:00, ...`), or None."""
    return ", ".join(f"{rule.country} {rule.window}" for rule in PROMOTIONAL_RULES) if applies(kind) else None


def suffixes(kind: str, opt_out_text: str) -> dict[str, str]:
    """Per number prefix, the suffix its SMS carry (only prefixes that carry one), for counting parts."""
    if kind != PROMOTIONAL:
        return {}
    return {rule.prefix: f" {opt_out_text}" for rule in PROMOTIONAL_RULES if rule.opt_out}


def too_long(text: str, settings: SenderSettings) -> str | None:
    """Why `text` followed by the longest suffix the sender adds is more SMS parts than allowed, or None."""
    suffix = max(suffixes(settings.at_sender_kind, settings.promotional_opt_out_text).values(), key=len, default=None)
    return None if suffix is None else segments.too_many_parts(text + suffix, "message with the opt-out")


def check_sms_window(text: str, kind: str | None) -> None:
    """`BadWindow` when SMS with this window (SMS_WINDOW, a cycle's `sms_window`) could never go under a
    sender of `kind`: it never meets a promotional window."""
    never = never_meets(parse_window(text)) if kind is not None and applies(kind) else None
    if never:
        raise BadWindow(f"{never}: no SMS would ever go; widen it or use a transactional sender id")


def never_meets(window: Window) -> str | None:
    """Why SMS with this window (in the customer's local time) could never go under a promotional sender
    id: the first country whose promotional window it never meets; None when it meets them all."""
    at = datetime(2026, 1, 5, tzinfo=ZoneInfo("UTC"))  # any instant: windows repeat daily
    for rule in PROMOTIONAL_RULES:
        if next_common_opening([(window, rule.zone), (rule.window, rule.zone)], at) is None:
            return f"{window} never meets the promotional window {rule}"
    return None
