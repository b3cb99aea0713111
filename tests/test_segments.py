"""SMS parts counted as AT bills them: GSM-7 with its extension table against UCS-2, 160/153 and 70/67."""

from __future__ import annotations

import pytest

from shared import segments
from shared.cycles import CycleError, check_message

CASES = [
    # (what, text, encoding, parts)
    ("empty", "", "GSM-7", 1),
    ("plain, one SMS", "a" * 160, "GSM-7", 1),
    ("plain, one over", "a" * 161, "GSM-7", 2),
    ("plain, two full parts", "a" * 306, "GSM-7", 2),
    ("plain, three parts", "a" * 307, "GSM-7", 3),
    ("GSM accents stay GSM-7", "é" * 160, "GSM-7", 1),
    ("extension counts two septets", "€" * 80, "GSM-7", 1),
    ("extension over one SMS", "€" * 81, "GSM-7", 2),
    ("every extension character", "^{}\\[~]|€\f", "GSM-7", 1),
    ("form feed is two septets", "\f" * 81, "GSM-7", 2),
    # 152 plain then an escape pair: the pair does not fit in part one (153) and starts part two.
    ("escape pair not split", "a" * 152 + "[" + "a" * 152, "GSM-7", 3),
    ("escape pair fits exactly", "a" * 151 + "[" + "a" * 153, "GSM-7", 2),
    ("one non-GSM character makes UCS-2", "a" * 69 + "ç", "UCS-2", 1),
    ("UCS-2 one over", "ж" * 71, "UCS-2", 2),
    ("UCS-2 two full parts", "ж" * 134, "UCS-2", 2),
    ("UCS-2 three parts", "ж" * 135, "UCS-2", 3),
    ("emoji is two units", "😀" * 35, "UCS-2", 1),
    ("emoji over one SMS", "😀" * 36, "UCS-2", 2),
    # 66 units then a surrogate pair: it does not fit in part one (67) and starts part two.
    ("surrogate pair not split", "ж" * 66 + "😀" + "ж" * 66, "UCS-2", 3),
    ("curly quote is UCS-2", "It\u2019s here", "UCS-2", 1),
    ("Swahili stays GSM-7", "Habari! Malipo yako ya KES 1,200 yamepokelewa.", "GSM-7", 1),
]


@pytest.mark.parametrize(("text", "encoding", "parts"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_parts_are_counted_as_at_bills_them(text: str, encoding: str, parts: int) -> None:
    assert segments.count(text) == segments.Segments(encoding, parts)


def test_a_message_is_limited_in_parts_not_characters() -> None:
    """Ten UCS-2 parts are 670 units: 671 Cyrillic letters are too many though far under 1,600 characters."""
    assert check_message("ж" * 670) == "ж" * 670
    with pytest.raises(CycleError, match=r"message is 11 SMS parts \(UCS-2\); at most 10"):
        check_message("ж" * 671)
    assert check_message("a" * 1530) == "a" * 1530
    with pytest.raises(CycleError, match=r"message is 11 SMS parts \(GSM-7\); at most 10"):
        check_message("a" * 1531)


def test_a_voice_message_is_not_counted_in_sms_parts() -> None:
    assert check_message("ж" * 1000, "voice_message") == "ж" * 1000
