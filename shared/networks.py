"""Mobile networks by the `networkCode` AT's delivery reports carry (at-api.md §3): a name where at-api.md
gives one, else the country it lists the code under, else the code itself. Never a guess from the prefix:
a number keeps its prefix when it moves network."""

from __future__ import annotations

#: Networks at-api.md names (§3, "networkCode values").
NAMES = {
    "63902": "Safaricom",
    "63903": "Airtel Kenya",
    "63907": "Telkom Kenya",  # at-api.md: "Orange Kenya (now Telkom)"
    "63999": "Equitel",
    "99999": "Athena (sandbox)",
}
#: Codes at-api.md lists by country only.
COUNTRIES = {
    **dict.fromkeys(("62120", "62130", "62150", "62160"), "Nigeria"),
    **dict.fromkeys(("63510", "63513", "63514"), "Rwanda"),
    **dict.fromkeys((f"6400{n}" for n in range(2, 10)), "Tanzania"),
    **dict.fromkeys(("64101", "64110", "64111", "64114"), "Uganda"),
    **dict.fromkeys(("65001", "65010"), "Malawi"),
}
#: A message no report named a network for: none came yet (or the telco left the field out).
NOT_REPORTED = "not named by a report"


def network_name(code: str | None) -> str:
    """`Safaricom`, `62120 (Nigeria)`, or the code as AT sent it."""
    if code is None:
        return NOT_REPORTED
    if code in NAMES:
        return NAMES[code]
    return f"{code} ({COUNTRIES[code]})" if code in COUNTRIES else code
