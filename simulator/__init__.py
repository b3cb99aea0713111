"""A loopback Africa's Talking for tests and local runs (at-api.md §11).

`simulator.wire` builds AT's callback bodies, `simulator.scenario` describes what happens to each
number, `simulator.app` serves the API and posts the callbacks (split by concern: see its docstring).
"""

from simulator.app import SimulatorServer, create_simulator_app, run_simulator_in_thread, serve
from simulator.scenario import Fault, Rule, Scenario

__all__ = [
    "Fault",
    "Rule",
    "Scenario",
    "SimulatorServer",
    "create_simulator_app",
    "run_simulator_in_thread",
    "serve",
]
