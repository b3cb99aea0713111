"""How many SMS parts a text is, counted as AT bills them (GSM 03.38 / 3GPP TS 23.038).

A text whose every character is in the GSM-7 alphabet is sent in GSM-7: 160 septets in one SMS, 153 per
part once concatenated (the part header takes 7); the extension table's characters (`^{}\\[~]|€` and form
feed) take two septets, an escape and the character. Any other character sends the whole text in UCS-2:
70 UTF-16 units alone, 67 per part; a character outside the BMP (an emoji) is two units, a surrogate pair.
Neither an escape pair nor a surrogate pair is split across two parts, so a part may hold one unit less.
"""

from __future__ import annotations

from dataclasses import dataclass

GSM7 = "GSM-7"
UCS2 = "UCS-2"

#: GSM 03.38 default alphabet (one septet each); the escape (0x1B) itself is not a character one can send.
GSM7_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
#: The extension table: an escape septet then the character, two septets each.
GSM7_EXTENSION = frozenset("\f^{}\\[~]|€")

#: (one SMS, one part of a concatenated SMS), in the encoding's units: septets or UTF-16 code units.
LIMITS = {GSM7: (160, 153), UCS2: (70, 67)}
#: The most parts one message may be: AT concatenates up to this, and each part is billed.
MAX_PARTS = 10


@dataclass(frozen=True)
class Segments:
    encoding: str
    parts: int

    def as_dict(self) -> dict[str, object]:
        return {"encoding": self.encoding, "parts": self.parts}


def encoding_of(text: str) -> str:
    return GSM7 if all(c in GSM7_BASIC or c in GSM7_EXTENSION for c in text) else UCS2


def _units(text: str, encoding: str) -> list[int]:
    """Each character's width in the encoding's units (2 for an extension character or a surrogate pair)."""
    if encoding == GSM7:
        return [2 if c in GSM7_EXTENSION else 1 for c in text]
    return [2 if ord(c) > 0xFFFF else 1 for c in text]


def units(text: str, encoding: str) -> int:
    """How long `text` is in the encoding's units: septets, or UTF-16 code units."""
    return sum(_units(text, encoding))


def count(text: str) -> Segments:
    """The encoding AT sends `text` in and how many SMS parts it bills for it (1 for an empty text)."""
    encoding = encoding_of(text)
    widths = _units(text, encoding)
    single, per_part = LIMITS[encoding]
    if sum(widths) <= single:
        return Segments(encoding, 1)
    parts, used = 1, 0
    for width in widths:
        if used + width > per_part:  # a pair that does not fit whole starts the next part
            parts, used = parts + 1, 0
        used += width
    return Segments(encoding, parts)


def too_many_parts(text: str, what: str = "message") -> str | None:
    """Why `text` is too long to send as one message (in parts, the way it is billed), or None."""
    segments = count(text)
    if segments.parts > MAX_PARTS:
        return f"{what} is {segments.parts} SMS parts ({segments.encoding}); at most {MAX_PARTS}"
    return None
