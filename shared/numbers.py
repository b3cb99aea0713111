"""Numbers from outside (AT's callbacks and answers) parsed with bounds, so none can cost more than its text.

`Decimal("9e999999999")` is cheap, but what follows is not: `int()` of it builds a billion-digit integer
(minutes of CPU, gigabytes), `abs()` or a comparison raises `decimal.Overflow`. So the text is checked
first: plain digits with an optional fraction and a short exponent, and a magnitude read from the
exponent alone. Anything else is "no value" (None): a callback with an absurd duration is still applied.
"""

from __future__ import annotations

import re
from decimal import Decimal

#: Larger than any duration, retry count or amount AT reports, and within every column that stores one
#: (`Integer`, `Numeric(14, 4)`).
LIMIT_DIGITS = 9

#: A sign, at most 30 digits before and after the point, an exponent of at most 3 digits. No NaN, no Infinity.
_NUMBER = re.compile(r"[+-]?(?:\d{1,30}(?:\.\d{0,30})?|\.\d{1,30})(?:[eE][+-]?\d{1,3})?")


def bounded_decimal(text: str | None, limit_digits: int = LIMIT_DIGITS) -> Decimal | None:
    """`text` as a Decimal of magnitude below 10**limit_digits, else None (also for anything unreadable)."""
    if text is None:
        return None
    text = text.strip()
    if not _NUMBER.fullmatch(text):
        return None
    value = Decimal(text)  # bounded by the pattern: at most 60 digits and an exponent below 1000
    if value and value.adjusted() >= limit_digits:
        return None
    return value


def bounded_int(text: str | None, limit_digits: int = LIMIT_DIGITS) -> int | None:
    """`text` as an integer (a fraction is cut off, as `int()` does), or None as `bounded_decimal`."""
    if text is not None and len(text) <= limit_digits and text.isascii() and text.isdigit():
        return int(text)  # plain digits, too few to reach the limit: what AT sends (`retryCount` of every report)
    value = bounded_decimal(text, limit_digits)
    return None if value is None else int(value)
