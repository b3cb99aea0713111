"""What an operator-given label (a contact's name, a tag) may hold: no control characters."""

from __future__ import annotations

import unicodedata


def control_character(text: str) -> str | None:
    """`a control character U+000A at position 4` (1-based) for the first control character or lone surrogate
    in `text`, else None. Tabs and line breaks count: a name is one line, and Postgres refuses NUL."""
    for position, char in enumerate(text, start=1):
        if unicodedata.category(char) in {"Cc", "Cs"}:
            return f"a control character U+{ord(char):04X} at position {position}"
    return None
