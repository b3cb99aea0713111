"""Simulator scenarios for whole populations (bench/time_to_reach.py): a network's slow delivery reports next
to calls that ring at their own pace (`voice_delay`), and thousands of prefix rules looked up by the longest
matching prefix."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
import requests

from simulator import Rule, Scenario, SimulatorServer, run_simulator_in_thread
from tests.sim_fixtures import AT_NUMBER, SIM_KEY, Receiver

A = "+254711000001"
#: Long enough that the simulator's redaction of it leaves the receiver's XML alone.
TOKEN = "profiles-hook-token"


@pytest.fixture
def hooks() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.stop()


@pytest.fixture
def sim(hooks: Receiver) -> Iterator[SimulatorServer]:
    s = run_simulator_in_thread(Scenario(), api_key=SIM_KEY, callback_base_url=hooks.url, webhook_token=TOKEN)
    yield s
    s.stop()


def test_voice_delay_paces_calls_apart_from_the_reports(sim: SimulatorServer, hooks: Receiver) -> None:
    """A network whose reports take a minute still rings a phone in seconds."""
    hooks.ask_digits = True
    sim.set_scenario(Scenario(default=Rule(delay=30.0, voice_delay=0.05, dtmf="1")))
    placed = time.monotonic()
    form = {"username": "sandbox", "from": AT_NUMBER, "to": A}
    assert requests.post(f"{sim.url}/call", data=form, headers={"apiKey": SIM_KEY}, timeout=5).status_code == 200
    assert sim.wait_idle(10)  # all three voice callbacks posted, none waited for the reports' 30 s
    live, digits, final = hooks.posts("/voice")
    assert (digits["form"]["dtmfDigits"], final["form"]["isActive"]) == ("1", "0")
    assert live["time"] - placed >= 0.05 and final["time"] - placed < 10


def test_voice_delay_defaults_to_the_rules_delay() -> None:
    assert Rule(delay=2.5).voice_delay is None
    assert Scenario.from_dict({"default": {"delay": 2.5, "voice_delay": 0.1}}).rule_for(A).voice_delay == 0.1
    with pytest.raises(ValueError, match="voice_delay"):
        Rule(voice_delay=-1)


def test_the_longest_prefix_wins_among_thousands() -> None:
    numbers = {f"+2547{n}{b:02d}*": {"network_code": f"6390{n}", "delay": b + 1} for n in range(5) for b in range(100)}
    numbers["+25473*"] = {"delay": 999}
    numbers["+254730*"] = {"delay": 998}
    scenario = Scenario.from_dict({"numbers": {**numbers, "+254712345678": {"delay": 0.5}}})
    assert scenario.rule_for("+254744271234").delay == 43
    assert scenario.rule_for("+254744271234").network_code == "63904"
    assert scenario.rule_for("+254712345678").delay == 0.5  # an exact number first
    assert scenario.rule_for("+254730001234").delay == 1  # "+2547300*" is longer than "+254730*"
    assert scenario.rule_for("+254790001234").delay == 0  # no prefix: the default
    assert Scenario.from_dict({"numbers": {"*": {"delay": 3}}}).rule_for(A).delay == 3
