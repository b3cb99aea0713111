"""What a cycle is expected to cost: SMS parts x the SMS price of their contact's country, plus calls.

`SMS_COST_ESTIMATE` is one price (`0.80`) or a table by country (`KE=0.80,NG=2.50,default=1.00`, or the
same as a JSON object). A contact's country is its number's calling code: planning and the dry run count
SMS parts per phone prefix in one set-based statement (shared.cycle_money), and the prefixes are priced here.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from decimal import Decimal, InvalidOperation
from typing import Any

import phonenumbers
from sqlalchemy import ColumnElement, func, literal_column

DEFAULT = "default"
#: Contacts whose calling code has no price of its own.
OTHER = "other"


def parse_sms_costs(raw: object) -> dict[str, Decimal]:
    """SMS_COST_ESTIMATE as a table: region code (or `default`) to price. `ValueError` says what is wrong."""
    if isinstance(raw, int | float | Decimal):
        return {DEFAULT: _price(DEFAULT, raw)}
    if isinstance(raw, Mapping):
        pairs = list(raw.items())
    else:
        text = str(raw).strip()
        if text.startswith("{"):
            try:
                loaded = json.loads(text, parse_float=Decimal)
            except ValueError as exc:
                raise ValueError(f"not a JSON object ({exc.args[0]})") from None
            pairs = list(loaded.items()) if isinstance(loaded, dict) else []
        elif "=" in text:
            pairs = [tuple(p.split("=", 1)) for p in text.split(",") if p.strip()]
        else:
            return {DEFAULT: _price(DEFAULT, text)}
    table = {_region(str(k)): _price(str(k), v) for k, v in pairs}
    if DEFAULT not in table:
        raise ValueError("a table by country needs a default= price for numbers of other countries")
    _one_price_per_calling_code(table)
    return table


def _region(key: str) -> str:
    key = key.strip()
    if key.lower() == DEFAULT:
        return DEFAULT
    if key.upper() not in phonenumbers.SUPPORTED_REGIONS:
        raise ValueError(f"unknown country {key!r}; use two-letter codes such as KE, or default")
    return key.upper()


def _price(key: str, value: object) -> Decimal:
    try:
        price = Decimal(str(value).strip())
    except InvalidOperation:
        raise ValueError(f"price for {key.strip()} is not a number: {str(value)[:20]!r}") from None
    if not price.is_finite() or price < 0:
        raise ValueError(f"price for {key.strip()} must be zero or more")
    return price


def _one_price_per_calling_code(table: Mapping[str, Decimal]) -> None:
    """Countries sharing a calling code (US and CA on +1) cannot be told apart by prefix: one price each."""
    seen: dict[int, tuple[str, Decimal]] = {}
    for region, price in table.items():
        if region == DEFAULT:
            continue
        code = phonenumbers.country_code_for_region(region)
        if code in seen and seen[code][1] != price:
            raise ValueError(f"{seen[code][0]} and {region} share calling code +{code}: give them one price")
        seen[code] = (region, price)


def prices_by_calling_code(table: Mapping[str, Decimal]) -> dict[str, Decimal]:
    """`{"254": 0.80, ..., "other": default}`: the table keyed by calling code."""
    prices = {str(phonenumbers.country_code_for_region(r)): p for r, p in table.items() if r != DEFAULT}
    return {**prices, OTHER: table[DEFAULT]}


#: How many characters of a number `prefix_expr` keeps by default.
PREFIX_CHARACTERS = 4


def prefix_expr(phone: ColumnElement[str], characters: int = PREFIX_CHARACTERS) -> ColumnElement[str]:
    """The first `characters` of an E.164 number as SQL; by default four (`+254`), which hold its whole calling
    code (planning's send windows group numbers by more: worker/cycles/window_holds.py).

    Calling codes are one to three digits and prefix-free (ITU E.164), so grouping by this prefix gives at
    most a thousand groups, each of one country code, whatever the price table says (a plan recorded this
    way still prices right after SMS_COST_ESTIMATE changes).
    """
    # literal_column, not bound parameters: GROUP BY must repeat the select's expression exactly.
    return func.substr(phone, literal_column("1"), literal_column(str(characters)))


def calling_code_of(prefix: str) -> str:
    """The calling code a `+NNN` prefix starts with, or `other` for a prefix that starts none."""
    digits = prefix.removeprefix("+")
    for length in (1, 2, 3):
        head = digits[:length]
        if len(head) == length and head.isdigit() and int(head) in phonenumbers.COUNTRY_CODE_TO_REGION_CODE:
            return head
    return OTHER


def estimate(
    sms_parts_by_prefix: Mapping[str, int],
    voice: int,
    table: Mapping[str, Decimal],
    call_price: Decimal,
    currency: str,
) -> dict[str, str]:
    """`{"amount": "12.40", "currency": "KES"}`: each SMS part billed at its contact's country's price."""
    prices = prices_by_calling_code(table)
    sms = sum(
        (prices.get(calling_code_of(prefix), prices[OTHER]) * n for prefix, n in sms_parts_by_prefix.items()),
        Decimal(0),
    )
    return money(sms + call_price * voice, currency)


def money(amount: Decimal, currency: str) -> dict[str, str]:
    return {"amount": str(amount.quantize(Decimal("0.01"))), "currency": currency}


def summary(settings: Any, sms_parts_by_prefix: Mapping[str, int], voice: int, segments: Any) -> dict[str, Any]:
    """The `segments` and `estimated_cost` keys of a dry run and of a cycle's answer (design §4.1)."""
    cost = estimate(
        sms_parts_by_prefix, voice, settings.sms_cost_estimate, settings.call_cost_estimate, settings.cost_currency
    )
    return {"segments": segments.as_dict(), "estimated_cost": cost}
