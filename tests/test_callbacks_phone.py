"""`phone_or_raw` (what a delivery report's number is stored as) takes a Kenyan E.164 number as it is, without
phonenumbers: it must give exactly what parsing gives, for valid and invalid numbers alike."""

from __future__ import annotations

import random

import pytest

from shared.callbacks import phone_or_raw
from shared.phone import InvalidPhone, normalise_phone


def parsed(raw: str) -> str:
    """What `phone_or_raw` gave before its shortcut: phonenumbers for every number."""
    try:
        return normalise_phone(raw, "KE")
    except InvalidPhone:
        return raw[:20]


def kenyan_numbers() -> list[str]:
    """Every 3-digit start after +254 (mobile, fixed, premium, toll-free, unallocated), with random tails."""
    pick = random.Random(15)
    return [f"+254{start:03d}{pick.randrange(10**6):06d}" for start in range(100, 1000) for _ in range(3)]


def test_a_kenyan_e164_number_is_stored_as_parsing_would_store_it() -> None:
    for raw in kenyan_numbers():
        assert phone_or_raw(raw) == parsed(raw), raw


@pytest.mark.parametrize(
    "raw",
    [
        "+2540712345678",  # a national 0 after the country code: parsing drops it
        "+25407123456",
        "+254 711 000 001",
        "0711000001",
        "254711000001",
        "+25471100000\uff11",  # a full-width digit is not one of ours
        "+2547110000011",
        "+256772123456",
        "+254711000001x",
        "not a number",
        "+2547" + "1" * 35,
    ],
)
def test_anything_else_is_parsed(raw: str) -> None:
    assert phone_or_raw(raw) == parsed(raw)
