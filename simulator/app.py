"""A loopback Africa's Talking: the SMS and voice APIs, their callbacks, and a control API for tests.

The AT surface is wire-exact where Reach or the SDK depends on it (at-api.md §11): `POST
/version1/messaging` answers 201 with `Content-Type: application/json` exactly (the SDK returns a str
for anything else), `POST /call` answers 200, a bad `apiKey` gets AT's 401 text. What happens next
(delivery reports, voice callbacks, faults) follows a `Scenario`.

One module per concern; this one keeps the names other code imports:

- `simulator.state`: the scenario, fault budget, logs and callback posting (`SimState`);
- `simulator.at_http`: AT's answers, request fields and key check, shared by the surfaces;
- `simulator.sms`, `simulator.voice`: the two AT surfaces and what follows each request;
- `simulator.faults`: the request log and every injected fault;
- `simulator.control`: the `/_sim/` control API;
- `simulator.server`: `create_simulator_app`, `run_simulator_in_thread()` (a pytest fixture's
  server on a free port) and `serve()` (the foreground server).
"""

from simulator.at_http import AUTH_FAILED
from simulator.faults import FAULT_BODIES
from simulator.server import (
    SimulatorServer,
    close_simulator_app,
    create_simulator_app,
    run_simulator_in_thread,
    serve,
)
from simulator.sms import CURRENCY, SMS_COST
from simulator.state import CALLBACK_ATTEMPTS, CALLBACK_BACKOFF_S, CALLBACK_TIMEOUT_S, SimState

__all__ = [
    "AUTH_FAILED",
    "CALLBACK_ATTEMPTS",
    "CALLBACK_BACKOFF_S",
    "CALLBACK_TIMEOUT_S",
    "CURRENCY",
    "FAULT_BODIES",
    "SMS_COST",
    "SimState",
    "SimulatorServer",
    "close_simulator_app",
    "create_simulator_app",
    "run_simulator_in_thread",
    "serve",
]
