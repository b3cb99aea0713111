"""The population bench/time_to_reach.py reaches: five mobile networks, each with its own delivery-report pace and
failure mix, and the simulator scenario that plays them (simulator/scenario.py, one prefix rule per cell).

Every contact falls in one cell of its network: its SMS `outcome` (delivered, a final failure, or no final report
ever) and a `bucket` 0..99, the percentile of the network's report delays its report comes at (the network's
delays are log-normal, from the median and P95 below, capped at twice the P95). A call's outcome is the bucket's
last digit (`CALLS`): independent of the SMS outcome. The number spells the cell, so the simulator's longest
prefix finds the rule: `+2547{n}{outcome}{bucket:02d}{i:04d}` in Kenya, `+2348{n}{outcome}{bucket:02d}{i:05d}` in
Nigeria. Which cell each contact falls in is drawn from a seeded generator: the same seed, the same contacts.

All delays are real-world seconds divided by SCALE (one benchmark second stands for a minute).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from statistics import NormalDist
from typing import Any

#: Real seconds per benchmark second.
SCALE = 60
DELIVERED, FAILED, SILENT = "delivered", "failed", "silent"
OUTCOMES = (DELIVERED, FAILED, SILENT)
#: What each SMS outcome's delivery reports are: one final report (or only a `Sent`) at the cell's delay.
REPORTS: dict[str, list[Any]] = {DELIVERED: ["Success"], FAILED: [["Failed", "DeliveryFailure"]], SILENT: ["Sent"]}
#: A call's outcome by the last digit of its bucket: 60 % answer and press 1, 20 % answer and do not, 20 % never
#: pick up (no answer, busy: called again CALL_RETRIES times, with the same outcome).
CALLS: dict[int, dict[str, Any]] = {
    **{d: {"voice": "answered", "dtmf": "1"} for d in range(6)},
    6: {"voice": "answered"},
    7: {"voice": "answered"},
    8: {"voice": "NO_ANSWER"},
    9: {"voice": "USER_BUSY"},
}
#: Real seconds between a call's callbacks (ringing, the key press, hanging up).
CALL_STEP_SECONDS = 15
#: What an answered call lasts (the simulator's final callback); AT's price is the simulator's `amount`.
CALL_DURATION = 45


@dataclass(frozen=True)
class Network:
    code: str
    name: str
    #: The number's prefix up to the network digit, and how many digits number a contact within its cell.
    prefix: str
    index_digits: int
    #: Real seconds from AT's acceptance to the final report: the median and the P95.
    median: float
    p95: float
    #: Shares of SMS with a final failure and with no final report ever; the rest are delivered.
    failed: float
    silent: float
    #: Share of the contacts on this network.
    share: float

    def delay(self, bucket: int) -> float:
        """Benchmark seconds to the final report at percentile `bucket` + 0.5 of this network's delays."""
        sigma = math.log(self.p95 / self.median) / NormalDist().inv_cdf(0.95)
        real = self.median * math.exp(sigma * NormalDist().inv_cdf((bucket + 0.5) / 100))
        return min(real, 2 * self.p95) / SCALE

    def cell(self, outcome: str) -> str:
        return f"{self.prefix}{OUTCOMES.index(outcome)}"

    def phone(self, outcome: str, bucket: int, index: int) -> str:
        return f"{self.cell(outcome)}{bucket:02d}{index:0{self.index_digits}d}"


#: at-api.md §3 names the Kenyan codes; it lists 62120 and 62130 under Nigeria only (the brief's MTN and Airtel).
NETWORKS = (
    Network("63902", "Safaricom", "+25470", 4, median=6, p95=90, failed=0.04, silent=0.03, share=0.40),
    Network("63903", "Airtel Kenya", "+25471", 4, median=30, p95=360, failed=0.06, silent=0.05, share=0.15),
    Network("63907", "Telkom Kenya", "+25472", 4, median=60, p95=720, failed=0.08, silent=0.07, share=0.05),
    Network("62130", "62130 (Nigeria)", "+23480", 5, median=20, p95=300, failed=0.05, silent=0.04, share=0.25),
    Network("62120", "62120 (Nigeria)", "+23481", 5, median=90, p95=1500, failed=0.06, silent=0.09, share=0.15),
)


@dataclass(frozen=True)
class Person:
    phone: str
    network: Network
    outcome: str
    bucket: int

    @property
    def answers(self) -> bool:
        return CALLS[self.bucket % 10].get("dtmf") == "1"


def population(count: int, seed: int, first_index: int = 0, *, even: bool = False) -> list[Person]:
    """`count` contacts spread over the networks by share (`even`: as many on each), each in a cell drawn from
    `seed`; numbers start at `first_index` within each cell (a second population with a higher one never shares
    a number)."""
    rng = random.Random(seed)
    people: list[Person] = []
    used: dict[tuple[str, str, int], int] = {}
    for network in NETWORKS:
        for _ in range(round(count * (1 / len(NETWORKS) if even else network.share))):
            draw = rng.random()
            outcome = (
                FAILED if draw < network.failed else SILENT if draw < network.failed + network.silent else DELIVERED
            )
            bucket = rng.randrange(100)
            key = (network.code, outcome, bucket)
            index = first_index + used.get(key, 0)
            used[key] = used.get(key, 0) + 1
            people.append(Person(network.phone(outcome, bucket, index), network, outcome, bucket))
    return people


def scenario(seed: int) -> dict[str, Any]:
    """The simulator scenario (JSON form) of every cell of every network."""
    numbers = {}
    for network in NETWORKS:
        for outcome in OUTCOMES:
            for bucket in range(100):
                rule = {
                    "network_code": network.code,
                    "dlr": REPORTS[outcome],
                    "delay": round(network.delay(bucket), 3),
                    "voice_delay": CALL_STEP_SECONDS / SCALE,
                    "duration": CALL_DURATION,
                    **CALLS[bucket % 10],
                }
                numbers[f"{network.cell(outcome)}{bucket:02d}*"] = rule
    return {"numbers": numbers, "seed": seed}


def silent_scenario(seed: int) -> dict[str, Any]:
    """The same networks and calls, with no delivery report for SMS sent from now on."""
    raw = scenario(seed)
    for rule in raw["numbers"].values():
        rule["dlr"] = []
    return raw
