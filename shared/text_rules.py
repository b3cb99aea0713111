"""What operator-given text may hold: a length bound worded one way everywhere, and for a label (a contact's name,
a tag) no control characters."""

from __future__ import annotations

import unicodedata


def control_character(text: str) -> str | None:
    """`a control character U+000A at position 4` (1-based) for the first control character or lone surrogate
    in `text`, else None. Tabs and line breaks count: a name is one line, and Postgres refuses NUL."""
    for position, char in enumerate(text, start=1):
        if unicodedata.category(char) in {"Cc", "Cs"}:
            return f"a control character U+{ord(char):04X} at position {position}"
    return None


def too_long(text: str, limit: int) -> str | None:
    """`is too long (12 characters; at most 10)` when `text` is longer than `limit`, else None: the one wording
    of every length bound an operator meets (message, name, tag, cron, time zone, voice greeting)."""
    if len(text) > limit:
        return f"is too long ({len(text)} characters; at most {limit})"
    return None
