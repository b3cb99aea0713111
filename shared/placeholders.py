"""Placeholders in a message (design §4.1): `{name}` and `{phone}` are filled per contact; `{{` and `}}` are
literal braces; any other `{...}` is refused where the message enters (`check`), naming it.

A contact without a name: `{name}` goes, and so does what would dangle around it, so the text reads as if
written without it:

- the spaces before it: `Hello {name} and welcome` → `Hello and welcome`, `Hello {name}!` → `Hello!`;
- between two commas, one of them: `Your order, {name}, is ready` → `Your order is ready`;
- a comma before it, at the end of a sentence: `Thank you, {name}.` → `Thank you.`;
- at the start of the text or of a sentence, the comma or colon after it, and the next letter becomes a
  capital: `{name}, your order is ready` → `Your order is ready`;
- otherwise a comma after it stays: `Dear {name}, your order is ready` → `Dear, your order is ready`
  (never `Dear , your order`).

A brace that opens nothing (`Smile :}`, `a { b`) is literal text. `{phone}` is the number in E.164.
"""

from __future__ import annotations

import re

NAME, PHONE = "name", "phone"
KNOWN = (NAME, PHONE)
ALLOWED = "use {name} or {phone}, and {{ or }} for a literal brace"

#: `{{`, `}}`, or a pair of braces with no brace inside: a placeholder, known or not.
_TOKEN = re.compile(r"\{\{|\}\}|\{([^{}]*)\}")
#: Stands for a removed `{name}` while the text around it is tidied: NUL, which no message may hold
#: (`shared.cycles.check_message` refuses it) and no name either (`shared.text_rules`).
_GONE = "\x00"
#: Marks where a sentence now starts, so only that letter becomes a capital (not the author's own lower case).
_CAPITAL = "\x01"
_TIDY = [
    # ", {name}," → ""
    (re.compile(rf",[ \t]*{_GONE}[ \t]*,"), ""),
    # ", {name}." or ", {name}" at the end → ""
    (re.compile(rf",[ \t]*{_GONE}(?=[ \t]*(?:[.!?;:]|$))"), ""),
    # at the start of the text, a line or a sentence: the name and a comma, colon or spaces after it
    (re.compile(rf"(^|[.!?][ \t]+|\n){_GONE}[ \t]*[,;:]?[ \t]*"), rf"\1{_CAPITAL}"),
    # anywhere else: the name and the spaces before it
    (re.compile(rf"[ \t]*{_GONE}"), ""),
]
_CAPITALISE = re.compile(rf"{_CAPITAL}(.?)", re.DOTALL)


class BadPlaceholder(ValueError):
    """A message whose placeholders cannot be filled; the message names what is wrong."""


def unknown(text: str) -> list[str]:
    """The placeholders in `text` other than `{name}` and `{phone}`, as written (`{nme}`), in order."""
    return [
        match.group() for match in _TOKEN.finditer(text) if match.group(1) is not None and match.group(1) not in KNOWN
    ]


def is_personal(text: str) -> bool:
    """Whether `text` differs per contact (holds `{name}` or `{phone}`)."""
    return any(match.group(1) in KNOWN for match in _TOKEN.finditer(text))


def check(text: str, what: str = "message") -> None:
    """`BadPlaceholder` for an unknown placeholder, or for a text that is nothing without a name."""
    found = unknown(text)
    if found:
        more = f" (and {len(found) - 1} more)" if len(found) > 1 else ""
        raise BadPlaceholder(f"{what} has an unknown placeholder {found[0]}{more}; {ALLOWED}")
    if not render(text, name=None, phone="+0").strip():
        raise BadPlaceholder(f"{what} is empty for a contact without a name; add some text around {{name}}")


def render(text: str, *, name: str | None = None, phone: str | None = None) -> str:
    """`text` for one contact: placeholders filled, a missing name removed as the module says."""
    name = (name or "").strip()
    removed = False

    def fill(match: re.Match[str]) -> str:
        nonlocal removed
        token, key = match.group(), match.group(1)
        if token in ("{{", "}}"):
            return token[0]
        if key == NAME:
            removed = removed or not name
            return name or _GONE
        if key == PHONE:
            return phone or ""
        return token  # unknown: `check` refuses it where the text enters; text stored before is left as it is

    rendered = _TOKEN.sub(fill, text)
    if not removed:
        return rendered
    for pattern, replacement in _TIDY:
        rendered = pattern.sub(replacement, rendered)
    return _CAPITALISE.sub(lambda m: m.group(1).upper(), rendered).strip()
