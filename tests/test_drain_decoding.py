"""The drain's cheaper spellings of `json.loads`, `json.dumps` and the integer parse: the same value, or the same
error, as the plain call for any input (shared/fast_json.py `loads`, `dumps` and `compact_dumps`,
shared/numbers.py `bounded_int`). A poison item must be parked, and a good one applied, exactly as before."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from shared import fast_json, inbox
from shared.numbers import LIMIT_DIGITS, bounded_decimal, bounded_int

#: JSON values, with what Python's json reads beyond JSON: NaN and infinities, lone surrogates, NUL.
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(), children, max_size=4),
    max_leaves=12,
)


def outcome(call: Any, raw: Any) -> tuple[str, str]:
    """What a call gives: its value's repr (NaN equals NaN that way), or its error's type and message."""
    try:
        return "value", repr(call(raw))
    except Exception as exc:  # the very error json.loads raises is the point
        return type(exc).__name__, str(exc)


def assert_loads_like_json(raw: str | bytes) -> None:
    assert outcome(fast_json.loads, raw) == outcome(json.loads, raw), raw


@given(json_values, st.sampled_from(["", " ", "\n", "\t "]), st.sampled_from(["", " ", "\n", "x", "}", ","]))
@settings(max_examples=300, deadline=None)
def test_loads_reads_any_document_as_json_loads_does(value: Any, before: str, after: str) -> None:
    text = before + json.dumps(value) + after
    assert_loads_like_json(text)
    assert_loads_like_json(text.encode("utf-8", "surrogatepass"))
    assert_loads_like_json(text.encode("utf-16"))


@given(st.binary(max_size=40), st.text(max_size=20))
@settings(max_examples=300, deadline=None)
def test_loads_fails_on_junk_as_json_loads_does(junk: bytes, text: str) -> None:
    for raw in (junk, b"{" + junk, b"{" + junk + b"}", "{" + text, "{" + text + "}", b'{"a":1}' + junk):
        assert_loads_like_json(raw)


@given(st.dictionaries(st.text(), st.text(), max_size=6), st.sampled_from(["dlr", "sms", "voice"]))
@settings(max_examples=100, deadline=None)
def test_an_item_as_the_receiver_queues_it_is_read_back_whole(data: dict[str, str], kind: str) -> None:
    item_id, payload = inbox.encode(kind, data)
    item = inbox.InboxItem.from_json(payload.encode("utf-8", "surrogatepass"))
    assert (item.id, item.kind, item.data) == (item_id, kind, data)


@given(json_values)
@settings(max_examples=300, deadline=None)
def test_dumps_writes_what_json_dumps_writes(value: Any) -> None:
    assert outcome(fast_json.dumps, value) == outcome(json.dumps, value)


def test_dumps_refuses_what_json_dumps_refuses() -> None:
    assert outcome(fast_json.dumps, {"at": object()}) == outcome(json.dumps, {"at": object()})


def _compact(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


@given(json_values)
@settings(max_examples=300, deadline=None)
def test_compact_dumps_writes_what_json_dumps_writes_compact(value: Any) -> None:
    assert outcome(fast_json.compact_dumps, value) == outcome(_compact, value)


def test_compact_dumps_refuses_what_json_dumps_refuses() -> None:
    assert outcome(fast_json.compact_dumps, {"at": object()}) == outcome(_compact, {"at": object()})


@given(st.from_regex(r"\A[ +-]?[0-9]{0,12}(\.[0-9]{0,3})?[ ]?\Z") | st.text(max_size=12))
@settings(max_examples=300, deadline=None)
def test_bounded_int_of_digits_is_the_decimal_parse(text: str) -> None:
    value = bounded_decimal(text)
    assert bounded_int(text) == (None if value is None else int(value))


def test_bounded_int_keeps_its_limit_for_plain_digits() -> None:
    assert bounded_int("9" * LIMIT_DIGITS) == int("9" * LIMIT_DIGITS)
    assert bounded_int("1" + "0" * LIMIT_DIGITS) is None
    assert bounded_int("0" * (LIMIT_DIGITS + 5) + "7") == 7  # leading zeros: the value counts, as for Decimal
    assert bounded_int("٣") == int(Decimal("٣")) == 3  # a digit, not an ASCII one: the Decimal path reads it
