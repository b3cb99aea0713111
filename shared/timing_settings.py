"""Settings of when Reach reaches a customer: the send windows in the customer's local time (design §4.2), what
AT_SENDER_ID is registered as (a promotional sender keeps each country's rules, shared/sender_rules.py), and how
long a `same_cycle` fallback waits for a delivery report (design §4.1). `shared.settings.Settings` inherits
them, so they are read, validated and named in errors like every other setting."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator
from pydantic_settings import BaseSettings

from shared.sender_rules import SAFARICOM_OPT_OUT, TRANSACTIONAL, OptOutText, SenderKind, check_sms_window
from shared.windows import check_window


class TimingSettings(BaseSettings):
    #: What AT_SENDER_ID is registered as; a promotional one keeps each country's rules (shared/sender_rules.py).
    at_sender_kind: SenderKind = TRANSACTIONAL
    promotional_opt_out_text: OptOutText = SAFARICOM_OPT_OUT
    #: When SMS and calls may go out, in the customer's local time (design §4.2, shared/windows.py):
    #: `HH:MM-HH:MM` (start included, end excluded, may cross midnight) or `always`; a cycle may override them.
    sms_window: str = "always"
    call_window: str = "08:00-20:00"
    #: A `same_cycle` cycle (design §4.1) calls a contact whose SMS has no `Success` report this long after AT
    #: accepted it (a final failure calls at once). Whole seconds, or `auto`: the P95 of how long final reports
    #: of the contact's mobile network took lately, within the two bounds below (shared/report_delays.py).
    fallback_after_seconds: int | Literal["auto"] = 900
    #: `auto`'s bounds: never sooner than the minimum (a network whose reports all come in seconds still gets
    #: a moment for a late one), never later than the maximum, which is also the wait while too few reports say
    #: how fast a network is.
    fallback_after_min_seconds: int = Field(default=60, gt=0, le=7 * 86_400)
    fallback_after_max_seconds: int = Field(default=3600, gt=0, le=7 * 86_400)

    @field_validator("fallback_after_seconds", mode="before")
    @classmethod
    def _whole_seconds_or_auto(cls, value: object) -> object:
        if isinstance(value, str) and value.strip().lower() == "auto":
            return "auto"
        whole = isinstance(value, int) or (isinstance(value, str) and value.strip().lstrip("-").isdigit())
        if isinstance(value, bool) or not whole or not 0 < int(value) <= 7 * 86_400:  # type: ignore[call-overload]
            raise ValueError(f"must be `auto` or a whole number of seconds from 1 to 604800, not {str(value)[:40]!r}")
        return int(value)  # type: ignore[call-overload]

    @field_validator("sms_window", "call_window")
    @classmethod
    def _window(cls, value: str, info: ValidationInfo) -> str:
        if info.field_name == "sms_window":  # it must meet a promotional sender id's windows
            check_sms_window(value, info.data.get("at_sender_kind"))
        return check_window(value)

    @model_validator(mode="after")
    def _fallback_bounds_in_order(self) -> TimingSettings:
        if self.fallback_after_min_seconds > self.fallback_after_max_seconds:
            raise ValueError("FALLBACK_AFTER_MIN_SECONDS must not be above FALLBACK_AFTER_MAX_SECONDS")
        return self
