"""Phone numbers: everything Reach stores or sends is E.164 (`+254711000001`), at-api.md §9."""

from __future__ import annotations

import phonenumbers
from phonenumbers import NumberParseException, PhoneNumberType


class InvalidPhone(ValueError):
    """A number that cannot be a customer's phone; the message says why."""


_REASONS = {
    NumberParseException.INVALID_COUNTRY_CODE: "unknown country code",
    NumberParseException.NOT_A_NUMBER: "not a phone number",
    NumberParseException.TOO_SHORT_AFTER_IDD: "too short",
    NumberParseException.TOO_SHORT_NSN: "too short",
    NumberParseException.TOO_LONG: "too long",
}
_UNREACHABLE_TYPES = {PhoneNumberType.PREMIUM_RATE, PhoneNumberType.TOLL_FREE, PhoneNumberType.SHARED_COST}


def normalise_phone(raw: str, default_country: str = "KE") -> str:
    """E.164 form of `raw`, read as a local number of `default_country` when it has no country code."""
    text = (raw or "").strip()
    if not text:
        raise InvalidPhone("empty phone number")
    if len(text) > 40:
        raise InvalidPhone("too long")
    # phonenumbers reads letters as keypad digits ("0711 ABC 001" is +254711222001): someone else's phone.
    if any(ch.isalpha() for ch in text):
        raise InvalidPhone("not a phone number (it has letters in it)")
    # "254711..." (international digits without the +) is common in spreadsheets.
    if text[0].isdigit() and not text.startswith("0") and len(_digits(text)) > 10:
        text = "+" + text
    elif text.startswith("00"):
        text = "+" + text[2:]
    try:
        number = phonenumbers.parse(text, default_country)
    except NumberParseException as exc:
        raise InvalidPhone(_REASONS.get(exc.error_type, "not a phone number")) from None
    if not phonenumbers.is_possible_number(number):
        raise InvalidPhone("wrong number of digits")
    if not phonenumbers.is_valid_number(number):
        raise InvalidPhone("not a valid number")
    if phonenumbers.number_type(number) in _UNREACHABLE_TYPES:
        raise InvalidPhone("not a personal number (premium, toll-free or shared-cost)")
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def _digits(text: str) -> str:
    return "".join(ch for ch in text if ch.isdigit())
