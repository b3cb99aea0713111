"""`json.loads` and `json.dumps` for the drain's hot path: the same values, text and errors, at about half the
cost (every claimed callback is decoded once and its payload encoded once: tests/test_drain_decoding.py holds
them to json's own for any input)."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from json.encoder import c_make_encoder, encode_basestring, encode_basestring_ascii  # type: ignore[attr-defined]
from typing import Any

#: The C scanner behind `json.loads`, made once: `loads` calls it directly.
_SCAN = json.JSONDecoder().scan_once


def loads(raw: str | bytes) -> Any:
    """`json.loads(raw)`, the same value or the same error, at half its cost for an item as `inbox.encode` writes it
    (every claimed callback is decoded: 3 µs of the drain's CPU per report). `json.loads` finds the encoding of
    bytes, decodes them, skips white space around the document and then calls this scanner: for UTF-8 that
    starts with `{` and has nothing after the document, the scanner alone does the same. Anything else (white
    space, another encoding, an error) goes through `json.loads` itself, so it raises as it always did."""
    try:
        text = raw.decode("utf-8", "surrogatepass") if isinstance(raw, bytes) and _utf8_object(raw) else raw
        if isinstance(text, str) and text[:1] == "{":
            doc, end = _SCAN(text, 0)
            if end == len(text):
                return doc
    except (ValueError, StopIteration):  # UnicodeDecodeError, or the scanner's own errors: json.loads says which
        pass
    return json.loads(raw)


def _utf8_object(raw: bytes) -> bool:
    """What `json.detect_encoding` takes for UTF-8 (no BOM, no NUL in the first two bytes), starting with `{`."""
    return raw[:1] == b"{" and raw[1:2] != b"\x00"


def _c_encoder(
    encode_string: Callable[[str], str], separators: tuple[str, str]
) -> Callable[[object, int], Sequence[str]] | None:
    """The C encoder `json.dumps` builds on every call, with these options, built once (None without the C
    accelerator)."""
    if c_make_encoder is None:
        return None
    item_separator, key_separator = separators
    # markers, default, encoder, indent, key separator, item separator, sort_keys, skipkeys, allow_nan
    return c_make_encoder(
        None, json.JSONEncoder().default, encode_string, None, key_separator, item_separator, False, False, True
    )  # type: ignore[no-any-return]


_ENCODE = _c_encoder(encode_basestring_ascii, (", ", ": "))
_ENCODE_COMPACT = _c_encoder(encode_basestring, (",", ":"))


def dumps(value: object) -> str:
    """`json.dumps(value)`, the same text, at half its cost: it builds its C encoder anew every call (every staged
    callback's payload: 2 µs of the drain's CPU per report). Without the circular-reference check, which a value
    decoded from JSON never needs."""
    if _ENCODE is None:
        return json.dumps(value)
    return "".join(_ENCODE(value, 0))


def compact_dumps(value: object) -> str:
    """`json.dumps(value, ensure_ascii=False, separators=(",", ":"))`, the same text, its encoder built once: the
    inbox's spelling of every callback the receiver queues (shared/inbox.py)."""
    if _ENCODE_COMPACT is None:
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    return "".join(_ENCODE_COMPACT(value, 0))
