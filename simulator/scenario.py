"""What the simulator does for each number: send answers, delivery reports, call outcomes and faults.

A scenario is a default `Rule`, per-number rules and a list of faults. Built in Python
(`Scenario(numbers={"+254711000001": Rule(send_status=403)})`, where each rule is complete) or loaded
from JSON, where a number's fields override the default's::

    {
      "default": {"dlr": ["Sent", "Success"], "voice": "answered"},
      "numbers": {
        "+254711000001": {"dlr": ["Sent", ["Failed", "UserIsInactive"]], "duplicates": 2, "shuffle": true},
        "+254711000002": {"send_status": 403},
        "+254722*":      {"voice": "USER_BUSY", "delay": 0.5},
        "+254733000003": {"voice": "answered", "dtmf": "1"},
        "+254744000004": {"call_status": "InvalidPhoneNumber"}
      },
      "faults": [
        {"path": "/version1/messaging", "status": 500, "count": 1},
        {"path": "/call", "status": "timeout", "count": 1}
      ],
      "allowed_sender_ids": ["ACME"],
      "hold": ["/version1/messaging"],
      "timeout_seconds": 30,
      "seed": 7
    }

Number patterns are an exact E.164 number or a prefix ending in `*` (`"*"` alone matches every number);
an exact match wins, then the longest prefix, then the default.

Rule fields (all optional):

- `dlr`: delivery reports posted for an accepted message, in order; each a status or
  `[status, failureReason]`. Default `["Sent", "Success"]`; `[]` posts none.
- `send_status`: statusCode in the `/messaging` answer, e.g. 403 InvalidPhoneNumber, 405
  InsufficientBalance, 406 UserInBlacklist, 409 DoNotDisturbRejection (answers HTTP 409 for the whole
  request, at-api.md §2.2). Default: 102 with `enqueue=1`, else 101. A rejected number gets no reports.
- `dnd_hours`: `HH:MM-HH:MM` in the number's local time (its zone by its prefix) on the simulator's clock,
  during which a send to it gets 409 DoNotDisturbRejection as `send_status` would, and outside which it is
  accepted: what AT does to a promotional sender id in Nigeria's ban, `"20:00-08:00"` (at-api.md §13).
- `call_status`: entry status in the `/call` answer. Default `Queued`; anything else (e.g.
  `InvalidPhoneNumber`) gets sessionId `"None"` and no callbacks.
- `voice`: `"answered"` or the `hangupCause` of an unanswered call (`NO_ANSWER`, `USER_BUSY`,
  `CALL_REJECTED`, `SUBSCRIBER_ABSENT`, `UNALLOCATED_NUMBER`, ...).
- `dtmf`: digits the customer presses if the voice reply holds a `<GetDigits>`.
- `duration`, `amount`: of an answered call (default 12 s, `"1.6000"`).
- `delay`: seconds before each callback, counted from the previous one (default 0).
- `voice_delay`: the same for the voice callbacks only (default: `delay`), so a network whose reports take
  minutes can still ring a phone in seconds.
- `duplicates`: each delivery report and final voice callback is posted this many times (default 1).
- `shuffle`: post the message's delivery reports in a different order than listed.
- `network_code`: `networkCode` of the reports (default `63902`). With `delay`, on a prefix, it gives a
  mobile network its own report pace: `"+25473*": {"network_code": "63903", "delay": 6}`.

Scenario fields:

- `faults`: each answers the next `count` (default 1) requests to `path` (exact, or a prefix ending in
  `*`); the first fault with count left wins. Shapes:

  - `{"path": "/call", "status": 500}`: an HTTP error *instead of* AT: nothing is sent, nothing placed.
    The body is akka-http's text for 429/500/502/503/504 (AT's server), else `"<code> <reason>"`;
    `body` replaces it, `content_type` replaces `text/plain; charset=UTF-8`.
  - `{"path": "/version1/messaging", "status": 502, "acted": true}`: accept-then-fail. AT acts (the
    SMS is accepted and its delivery reports follow; the call is placed and its callbacks follow) but
    the answer is a proxy's page: for 502/503/504 nginx's HTML page (`<html><head><title>502 Bad
    Gateway</title>...`, `text/html`), else the text above; `body` and `content_type` replace them.
  - `{"path": "/version1/messaging", "content_type": "application/json; charset=utf-8"}`: AT's real
    answer under another Content-Type (the SDK hands back a str for anything but `application/json`).
  - `{"path": "/version1/messaging", "truncate": 40}`: AT acts; its real answer is cut to the first 40
    bytes (a JSON cut short), with the real Content-Type and a matching Content-Length.
  - `{"path": "/call", "status": "reset"}`: AT reads the request and acts, then the connection is shut
    without a byte of answer (the client sees `RemoteDisconnected`, a `ConnectionError`).
  - `{"path": "/call", "status": "timeout"}`: the request is held for `timeout_seconds` (default 30)
    and nothing is done; `"slow"` does the request (the SMS goes out, the call is placed, callbacks
    follow) and holds only the answer that long, as when AT acted but its answer was lost.
  - `{"path": "/call", "status": "late"}`: AT acts and its callbacks start at once, while its answer
    is held `timeout_seconds` (set it below the client's read timeout): the customer picks up before
    AT's answer to `/call` has reached the caller.

- `outages`: one network failing everything for a while, as a carrier outage looks to AT's customers:
  `{"network_code": "63903", "seconds": 600}` gives every SMS AT accepts for a number whose rule has that
  `network_code`, from `start` (default 0) to `start + seconds` on the simulator's clock after the scenario was
  set, the outage's reports instead of the rule's: `dlr`, default `["Sent", ["Failed", "DeliveryFailure"]]`
  (`["Sent", "Expired"]` for a telco discarding them). Reports still carry the number's `networkCode`.
- `callback_attempts`: posts per callback before the simulator gives up on it (default 4, backing off
  from 50 ms); `1` means a callback that fails is never posted again.
- `hold`: paths (exact, or a prefix ending in `*`) whose requests are held: AT receives and records each
  one but neither acts on it nor answers until the test releases it (`POST /_sim/release`,
  `SimulatorServer.release()`; `GET /_sim/held` counts them). A test decides when AT answers, e.g. to cancel
  a cycle while its first batch is in flight. A held request still counts against the client's read timeout.
- `allowed_sender_ids`: when given, a `from` not in the list gets the request-level `InvalidSenderId`
  answer. `seed` makes `shuffle` repeatable.

What the simulator does whatever the scenario:

- A `to` number that is not E.164 (`^\\+\\d{1,3}\\d{3,}$`, the SDK's own check) gets what AT gives a
  number it refuses: on `/version1/messaging` statusCode 403 `InvalidPhoneNumber`, messageId `"None"`,
  cost `"0"` (at-api.md §2.2); on `/call` status `InvalidPhoneNumber`, sessionId `"None"`.
- Every XML answer to a voice callback is parsed strictly, as AT would (`xml.etree`, root `<Response>`).
  A live call whose answer does not parse is played as failed: AT has nothing to say, so its final
  callback is `status=Failed`, `callSessionState=Completed`, `hangupCause=UNSPECIFIED` ("AT could not get a
  cause": AT documents no cause for a bad XML answer, and this one can never be read as answered),
  `durationInSeconds=0`. The callback log keeps the parser's message under `xml_error`.
- Callbacks are due on the simulator's clock, which `POST /_sim/clock {"advance_seconds": N}` moves
  forward: a rule with `"delay": 10800` posts its report "3 h later" as soon as the clock passes it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal, TypeVar

from shared.windows import parse_window

T = TypeVar("T")

#: Send statusCodes and their names (at-api.md §2.2). 100-102 mean AT accepted the message.
SEND_STATUS_NAMES: dict[int, str] = {
    100: "Processed",
    101: "Sent",
    102: "Queued",
    401: "RiskHold",
    402: "InvalidSenderId",
    403: "InvalidPhoneNumber",
    404: "UnsupportedNumberType",
    405: "InsufficientBalance",
    406: "UserInBlacklist",
    407: "CouldNotRoute",
    409: "DoNotDisturbRejection",
    500: "InternalServerError",
    501: "GatewayError",
    502: "RejectedByGateway",
}
ACCEPTED_SEND_STATUSES = frozenset({100, 101, 102})

#: One delivery report: its status and, for Failed/Rejected, the failureReason.
DlrStep = tuple[str, str | None]


@dataclass(frozen=True)
class Rule:
    """What happens to one number."""

    dlr: tuple[DlrStep, ...] = (("Sent", None), ("Success", None))
    send_status: int | None = None
    dnd_hours: str | None = None
    call_status: str = "Queued"
    voice: str = "answered"
    dtmf: str | None = None
    duration: int = 12
    amount: str = "1.6000"
    delay: float = 0.0
    voice_delay: float | None = None
    duplicates: int = 1
    shuffle: bool = False
    network_code: str = "63902"

    def __post_init__(self) -> None:
        if self.send_status is not None and self.send_status not in SEND_STATUS_NAMES:
            raise ValueError(f"send_status: unknown statusCode {self.send_status}")
        if self.dnd_hours is not None:
            parse_window(self.dnd_hours)  # BadWindow, a ValueError, saying how to write one
        if self.delay < 0:
            raise ValueError("delay: must be >= 0")
        if self.voice_delay is not None and self.voice_delay < 0:
            raise ValueError("voice_delay: must be >= 0")
        if self.duplicates < 1:
            raise ValueError("duplicates: must be >= 1")

    @property
    def answered(self) -> bool:
        return self.voice == "answered"

    @property
    def call_delay(self) -> float:
        """Seconds before each voice callback."""
        return self.delay if self.voice_delay is None else self.voice_delay

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Rule:
        """A rule from its JSON form; unknown keys are an error so typos do not pass silently."""
        return _with_dlr_steps(cls, raw, "rule")


#: Fault statuses that are not an HTTP status code.
FAULT_WORDS = ("timeout", "slow", "late", "reset")


@dataclass(frozen=True)
class Fault:
    """One fault for the next `count` requests to `path`; see the module docstring for each shape."""

    path: str
    status: int | Literal["timeout", "slow", "late", "reset"] | None = None
    count: int = 1
    body: str | None = None
    acted: bool = False
    content_type: str | None = None
    truncate: int | None = None

    def __post_init__(self) -> None:
        if self.status is not None and self.status not in FAULT_WORDS and not _is_status_code(self.status):
            raise ValueError("fault status: must be an HTTP status code, 'timeout', 'slow', 'late' or 'reset'")
        if self.status is None and self.content_type is None and self.truncate is None:
            raise ValueError("fault: give a status, a content_type or truncate")
        if self.acted and not _is_status_code(self.status):
            raise ValueError("fault acted: only with an HTTP status code (the answer that replaces AT's)")
        if self.truncate is not None and (isinstance(self.truncate, bool) or self.truncate < 0):
            raise ValueError("fault truncate: a number of bytes >= 0")
        if self.count < 1:
            raise ValueError("fault count: must be >= 1")

    @property
    def before_acting(self) -> bool:
        """Answered instead of AT: nothing is sent, no call placed, no callback follows."""
        return self.status == "timeout" or (_is_status_code(self.status) and not self.acted)

    def matches(self, path: str) -> bool:
        return path.startswith(self.path[:-1]) if self.path.endswith("*") else path == self.path

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Fault:
        """A fault from its JSON form."""
        _check_keys(raw, {f.name for f in fields(cls)}, "fault")
        return cls(**raw)


@dataclass(frozen=True)
class Outage:
    """One network failing every SMS for `seconds` from `start` (the simulator's clock, from the scenario)."""

    network_code: str
    seconds: float
    start: float = 0.0
    dlr: tuple[DlrStep, ...] = (("Sent", None), ("Failed", "DeliveryFailure"))

    def __post_init__(self) -> None:
        if not self.network_code or self.seconds <= 0 or self.start < 0:
            raise ValueError("outage: a network_code, seconds > 0 and start >= 0")

    def covers(self, network_code: str, elapsed: float) -> bool:
        return network_code == self.network_code and self.start <= elapsed < self.start + self.seconds

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Outage:
        return _with_dlr_steps(cls, raw, "outage")


def _with_dlr_steps(cls: type[T], raw: dict[str, Any], what: str) -> T:
    """A rule or an outage from its JSON form: unknown keys are an error, `dlr` steps become tuples."""
    _check_keys(raw, {f.name for f in fields(cls)}, what)
    values = dict(raw)
    if "dlr" in values:
        values["dlr"] = tuple(_dlr_step(step) for step in values["dlr"])
    return cls(**values)


def _is_status_code(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 100 <= value <= 599


@dataclass(frozen=True)
class Scenario:
    """A default rule, per-number rules, and faults."""

    default: Rule = field(default_factory=Rule)
    numbers: dict[str, Rule] = field(default_factory=dict)
    faults: tuple[Fault, ...] = ()
    allowed_sender_ids: tuple[str, ...] | None = None
    timeout_seconds: float = 30.0
    seed: int | None = None
    callback_attempts: int = 4
    hold: tuple[str, ...] = ()
    outages: tuple[Outage, ...] = ()

    def __post_init__(self) -> None:
        if self.callback_attempts < 1:
            raise ValueError("callback_attempts: must be >= 1")
        if any(not isinstance(path, str) or not path.startswith("/") for path in self.hold):
            raise ValueError("hold: each a path starting with /, or a prefix ending in *")

    def holds(self, path: str) -> bool:
        """Whether requests to `path` wait for a release (`hold`)."""
        return any(path.startswith(p[:-1]) if p.endswith("*") else path == p for p in self.hold)

    def outage_for(self, rule: Rule, elapsed: float) -> Outage | None:
        """The outage of the rule's network at `elapsed` seconds into the scenario, if any."""
        return next((o for o in self.outages if o.covers(rule.network_code, elapsed)), None)

    def rule_for(self, number: str) -> Rule:
        """The rule for one number: exact match, then the longest matching prefix, then the default.

        One dict lookup per prefix length, so a scenario of thousands of prefixes (a population's profiles,
        bench/time_to_reach.py) costs what a handful does."""
        if number in self.numbers:
            return self.numbers[number]
        for length in range(len(number), -1, -1):
            rule = self.numbers.get(number[:length] + "*")
            if rule is not None:
                return rule
        return self.default

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Scenario:
        """A scenario from its JSON form (see the module docstring)."""
        _check_keys(raw, {f.name for f in fields(cls)}, "scenario")
        default_raw = raw.get("default", {})
        numbers = {pattern: Rule.from_dict({**default_raw, **rule}) for pattern, rule in raw.get("numbers", {}).items()}
        allowed = raw.get("allowed_sender_ids")
        return cls(
            default=Rule.from_dict(default_raw),
            numbers=numbers,
            faults=tuple(Fault.from_dict(f) for f in raw.get("faults", [])),
            allowed_sender_ids=None if allowed is None else tuple(allowed),
            timeout_seconds=float(raw.get("timeout_seconds", 30.0)),
            seed=raw.get("seed"),
            callback_attempts=int(raw.get("callback_attempts", 4)),
            hold=tuple(raw.get("hold", ())),
            outages=tuple(Outage.from_dict(o) for o in raw.get("outages", [])),
        )

    @classmethod
    def from_file(cls, path: str | Path) -> Scenario:
        """A scenario from a JSON file."""
        return cls.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))


def _dlr_step(step: str | list[str | None]) -> DlrStep:
    if isinstance(step, str):
        return (step, None)
    if isinstance(step, list | tuple) and len(step) == 2:
        return (str(step[0]), None if step[1] is None else str(step[1]))
    raise ValueError(f"dlr: each step is a status or [status, failureReason], not {step!r}")


def _check_keys(raw: dict[str, Any], allowed: set[str], what: str) -> None:
    if not isinstance(raw, dict):
        raise ValueError(f"{what}: must be a JSON object")
    unknown = sorted(set(raw) - allowed)
    if unknown:
        raise ValueError(f"{what}: unknown field(s) {', '.join(unknown)}")
