"""Africa's Talking, as Reach uses it: send SMS and place calls through the official SDK (at-api.md §1).

`AtClient` wraps `africastalking==2.0.3`. It points the SDK at the configured base URLs (the live or
sandbox AT, or the loopback simulator), always calls synchronously with Reach's timeouts, turns the
SDK's answers into frozen dataclasses, and classifies every failure once, here (style.md §4):

- `AtTransient`: worth retrying. Timeouts, connection errors, HTTP 429 and 5xx.
- `AtRejected`: permanent. 401, other 4xx, a number the SDK refuses, an answer that is not JSON.

No message of these errors, and no log line, contains the API key.
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from http import HTTPStatus
from typing import Any

import africastalking
import requests
from africastalking.Service import AfricasTalkingException

from shared.numbers import bounded_decimal
from shared.settings import Settings, get_settings

log = logging.getLogger(__name__)

#: The SDK's private base-URL attributes that `AtClient` overwrites (at-api.md §1.4). There is no
#: supported way to change the host; if an SDK upgrade renames these, `AtClient()` raises instead of
#: silently sending to the real AT, and tests/test_at_client.py fails.
OVERRIDDEN_ATTRIBUTES: dict[str, tuple[str, ...]] = {"SMS": ("_baseUrl", "_contentUrl"), "Voice": ("_baseUrl",)}

#: Longest piece of an AT answer quoted in an error message.
_QUOTE_CHARS = 200


class AtError(Exception):
    """Africa's Talking did not do what was asked; `http_status` is None when it is not known."""

    def __init__(self, message: str, http_status: int | None = None) -> None:
        super().__init__(message)
        self.http_status = http_status


class AtTransient(AtError):
    """Worth retrying: a timeout, a connection error, HTTP 429 or 5xx."""


class AtRejected(AtError):
    """Permanent: bad credentials, a bad request or number, or an answer Reach cannot read."""


def maybe_sent(exc: AtError) -> bool:
    """True when AT may have acted on the request although we got no answer (it timed out mid-read)."""
    cause = exc.__cause__
    if isinstance(cause, requests.exceptions.ConnectTimeout):
        return False
    if isinstance(cause, requests.exceptions.ReadTimeout):
        return True
    if isinstance(cause, requests.exceptions.ConnectionError):
        return "Connection aborted" in str(cause) or "RemoteDisconnected" in str(cause)
    return False


@dataclass(frozen=True)
class SmsRecipient:
    """One recipient entry of an SMS send answer (at-api.md §2.2)."""

    number: str
    status_code: int
    status: str
    message_id: str | None  # None when AT says "None": nothing was sent, no delivery report will come
    cost: Decimal | None
    currency: str | None


@dataclass(frozen=True)
class SmsSendResult:
    """AT's answer to a send: the summary line, and one entry per recipient (none on a request error)."""

    summary: str
    recipients: list[SmsRecipient]


@dataclass(frozen=True)
class CallEntry:
    """One number of a call request: `Queued` with a session id, or an error status."""

    phone_number: str
    status: str
    session_id: str | None


@dataclass(frozen=True)
class CallResult:
    """AT's answer to a call request; `error_message` is set only when the whole request failed."""

    entries: list[CallEntry]
    error_message: str | None


class AtClient:
    """Sends SMS and places calls through the SDK, at the configured base URLs."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._key = settings.at_api_key.get_secret_value()
        self._timeout = (settings.at_timeout_connect, settings.at_timeout_read)
        africastalking.initialize(settings.at_username, self._key)
        # initialize() rebinds the module globals on every call (at-api.md §1.2), so keep our own
        # references: another initialize() elsewhere cannot then undo our base URLs.
        self._sms = africastalking.SMS
        self._voice = africastalking.Voice
        _point_at(self._sms, settings.sms_base_url, "/messaging", OVERRIDDEN_ATTRIBUTES["SMS"])
        _point_at(self._voice, settings.voice_base_url, "/call", OVERRIDDEN_ATTRIBUTES["Voice"])
        log.info("AT client for %s: SMS %s, voice %s", settings.at_username, self.sms_url, self.voice_url)

    @property
    def sms_url(self) -> str:
        """The base URL the SDK now sends SMS to."""
        return self._sms._baseUrl

    @property
    def voice_url(self) -> str:
        """The base URL the SDK now places calls at."""
        return self._voice._baseUrl

    def send_sms(self, message: str, recipients: list[str], *, enqueue: bool = True) -> SmsSendResult:
        """Send one message to each recipient; per-recipient outcomes are in the result."""
        numbers = _as_list(recipients, "recipients")
        options: dict[str, Any] = {"enqueue": enqueue, "timeout": self._timeout}
        if self._settings.at_sender_id:
            options["sender_id"] = self._settings.at_sender_id
        # A 409 DoNotDisturbRejection is a normal answer sent with HTTP 409 (at-api.md §2.2): the SDK
        # raises it as an error, so its JSON is accepted from the error path too.
        answer = self._request(
            "SMS send", lambda: self._sms.send(message, numbers, **options), error_payload="SMSMessageData"
        )
        result = _sms_result(answer)
        log.info("SMS send to %d number(s): %s", len(numbers), result.summary)
        return result

    def call(self, phone_numbers: list[str]) -> CallResult:
        """Call each number from AT_VOICE_NUMBER; the call's XML comes from our voice callback."""
        numbers = _as_list(phone_numbers, "phone_numbers")
        caller = self._settings.at_voice_number
        if not caller:
            raise AtRejected("voice call: AT_VOICE_NUMBER is not configured")
        answer = self._request("voice call", lambda: self._voice.call(caller, numbers, timeout=self._timeout))
        result = _call_result(answer)
        log.info("voice call to %d number(s): %s", len(numbers), result.error_message or "accepted")
        return result

    # -- the one place errors are classified ------------------------------------------------------------

    def _request(self, what: str, send: Callable[[], Any], error_payload: str | None = None) -> dict[str, Any]:
        """Run one synchronous SDK call; return its JSON answer or raise AtTransient / AtRejected."""
        try:
            answer = send()
        except requests.exceptions.RequestException as exc:
            raise self._fail(_transport_error(what, exc, self._redact)) from exc
        except AfricasTalkingException as exc:
            payload = _json_object(str(exc))
            if error_payload and payload is not None and error_payload in payload:
                return payload
            # `from None`: the SDK's exception is the raw body, which this error quotes redacted.
            raise self._fail(_http_error(what, str(exc), self._redact)) from None
        except ValueError as exc:  # the SDK validates numbers before any HTTP request
            raise self._fail(AtRejected(f"{what}: {self._redact(str(exc))}")) from exc
        if isinstance(answer, dict):
            return answer
        # The SDK returns res.text for a 2xx whose Content-Type is not exactly application/json.
        quoted = self._redact(_quote(str(answer)))
        raise self._fail(AtRejected(f"{what}: AT answered without Content-Type application/json: {quoted}"))

    def _redact(self, text: str) -> str:
        return text.replace(self._key, "[redacted]") if self._key else text

    @staticmethod
    def _fail(error: AtError) -> AtError:
        log.warning("%s (HTTP %s, %s)", error, error.http_status, type(error).__name__)
        return error


def _point_at(service: object, base_url: str, probe_path: str, attributes: tuple[str, ...]) -> None:
    """Overwrite the SDK service's base URLs, and prove the SDK now builds URLs from them."""
    for name in attributes:
        if not hasattr(service, name):
            raise RuntimeError(
                f"africastalking {type(service).__name__} has no {name}: the SDK changed and the "
                "base-URL override (at-api.md §1.4) needs updating"
            )
        setattr(service, name, base_url)
    built = service._make_url(probe_path)  # type: ignore[attr-defined]
    if built != base_url + probe_path:
        raise RuntimeError(f"africastalking {type(service).__name__} ignores the base-URL override: {built}")


def _as_list(numbers: list[str], name: str) -> list[str]:
    # The SDK iterates its argument: a bare string would be sent digit by digit (at-api.md §1.5).
    if isinstance(numbers, str):
        raise TypeError(f"{name} must be a list of E.164 numbers, not a string")
    numbers = list(numbers)
    if not numbers:
        raise ValueError(f"{name} is empty")
    return numbers


# -- reading AT's answers ----------------------------------------------------------------------------------

_COST = re.compile(r"^\s*([A-Z]{3})\s+(-?\d+(?:\.\d+)?)\s*$")


def parse_cost(text: object) -> tuple[str | None, Decimal | None]:
    """AT's cost string as (currency, amount): "KES 0.8000" -> ("KES", 0.8000), "0" -> (None, 0)."""
    if text is None:
        return None, None
    match = _COST.match(str(text))
    if match:
        return match.group(1), bounded_decimal(match.group(2))
    amount = bounded_decimal(str(text))  # bounded: AT's text may hold any exponent (shared/numbers.py)
    if amount is None:
        log.warning("unreadable cost %r", text)
    return None, amount


def _none_word(value: object) -> str | None:
    """AT writes a missing id as the string "None"."""
    return None if value is None or value == "None" else str(value)


def _sms_result(answer: dict[str, Any]) -> SmsSendResult:
    try:
        data = answer["SMSMessageData"]
        recipients = [_recipient(raw) for raw in data.get("Recipients") or []]
        return SmsSendResult(summary=str(data.get("Message", "")), recipients=recipients)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise AtRejected(f"SMS send: unexpected answer shape ({type(exc).__name__}: {exc})") from None


def _recipient(raw: dict[str, Any]) -> SmsRecipient:
    currency, cost = parse_cost(raw.get("cost"))
    return SmsRecipient(
        number=str(raw["number"]),
        status_code=int(raw["statusCode"]),
        status=str(raw.get("status", "")),
        message_id=_none_word(raw.get("messageId")),
        cost=cost,
        currency=currency,
    )


def _call_result(answer: dict[str, Any]) -> CallResult:
    try:
        entries = [
            CallEntry(
                phone_number=str(raw["phoneNumber"]),
                status=str(raw["status"]),
                session_id=_none_word(raw.get("sessionId")),
            )
            for raw in answer.get("entries") or []
        ]
        return CallResult(entries=entries, error_message=_none_word(answer.get("errorMessage")))
    except (KeyError, TypeError, AttributeError) as exc:
        raise AtRejected(f"voice call: unexpected answer shape ({type(exc).__name__}: {exc})") from None


def _json_object(text: str) -> dict[str, Any] | None:
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _quote(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= _QUOTE_CHARS else text[:_QUOTE_CHARS] + "..."


# -- classifying failures --------------------------------------------------------------------------------
#
# The SDK raises AfricasTalkingException(res.text) for any non-2xx answer and drops the status code
# (at-api.md §1.5). We read the status back from the body rather than reach under the SDK: recovering
# it would mean replacing `africastalking.Service.requests` (process-wide, every thread) or a
# name-mangled private method, both more fragile than the one documented override we already make.
# AT's own errors have known bodies (akka-http texts and the 401 line), and proxies in front of it
# write "<code> <reason>"; anything else that reads like a server problem is retried, the rest is not.

#: Known bodies, most specific first (504's text also says "timely response").
_KNOWN_BODIES: tuple[tuple[re.Pattern[str], int], ...] = tuple(
    (re.compile(pattern, re.IGNORECASE), status)
    for pattern, status in (
        (r"supplied authentication is invalid", 401),
        (r"missing required form field", 400),
        (r"too many requests", 429),
        (r"did not receive a timely response|gateway time-?out", 504),
        (r"received an invalid response from the upstream|bad gateway", 502),
        (r"timely response|currently unavailable|service unavailable", 503),
        (r"internal server error", 500),
    )
)
#: "502 Bad Gateway", "<title>504 Gateway Time-out</title>": a status code followed by its own reason.
_STATUS_AND_REASON = re.compile(r"\b([1-5]\d\d)\s+([A-Za-z][A-Za-z -]*)")
#: Words of a server-side problem whose status we could not read.
_SERVER_TROUBLE = re.compile(
    r"server error|try again|temporar|unavailable|overload|maintenance|timed? ?out|rate limit|throttl",
    re.IGNORECASE,
)


def status_from_body(text: str) -> int | None:
    """The HTTP status an AT error body implies, or None when it does not say."""
    for pattern, status in _KNOWN_BODIES:
        if pattern.search(text):
            return status
    for match in _STATUS_AND_REASON.finditer(text):
        code = int(match.group(1))
        try:
            reason = HTTPStatus(code).phrase
        except ValueError:
            continue
        if _squash(match.group(2)).startswith(_squash(reason)):
            return code
    return None


def _squash(text: str) -> str:
    return re.sub(r"[^a-z]", "", text.lower())


def _is_transient_status(status: int) -> bool:
    return status in (408, 429) or status >= 500


def _http_error(what: str, body: str, redact: Callable[[str], str]) -> AtError:
    status = status_from_body(body)
    message = f"{what}: AT answered HTTP {status or 'error'}: {redact(_quote(body)) or '(empty body)'}"
    if status is not None:
        return (AtTransient if _is_transient_status(status) else AtRejected)(message, status)
    # AT's own application errors always explain themselves; an empty body is a proxy or gateway.
    transient = not body.strip() or bool(_SERVER_TROUBLE.search(body))
    return (AtTransient if transient else AtRejected)(message, None)


def _transport_error(what: str, exc: requests.exceptions.RequestException, redact: Callable[[str], str]) -> AtError:
    detail = f"{what}: {type(exc).__name__}: {redact(_quote(str(exc)))}"
    if isinstance(exc, requests.exceptions.InvalidJSONError):
        # The SDK calls res.json() on an application/json answer that turned out not to be JSON.
        return AtRejected(f"{what}: AT answered with invalid JSON")
    transient = (
        requests.exceptions.Timeout,
        requests.exceptions.ConnectionError,
        requests.exceptions.ChunkedEncodingError,
    )
    # Anything else (InvalidURL, MissingSchema, TooManyRedirects) is configuration: retrying cannot help.
    return (AtTransient if isinstance(exc, transient) else AtRejected)(detail)


# -- one client per process ----------------------------------------------------------------------------

_client: AtClient | None = None
_client_pid: int | None = None
_client_lock = threading.Lock()


def get_at_client() -> AtClient:
    """The process's client, built on first use and again after a fork (each Celery worker process)."""
    global _client, _client_pid
    with _client_lock:
        # A forked child inherits the parent's client; rebuilding it re-applies the base-URL override
        # in that process, as at-api.md §1.4 asks, without relying on a worker_process_init hook.
        if _client is None or _client_pid != os.getpid():
            _client = AtClient(get_settings())
            _client_pid = os.getpid()
        return _client


def reset_at_client() -> None:
    """Forget the cached client: after a fork, in tests, or after the settings change."""
    global _client, _client_pid
    with _client_lock:
        _client, _client_pid = None, None


def _after_fork_in_child() -> None:
    # The lock may have been held by another thread at fork time; a fresh one cannot deadlock.
    global _client_lock
    _client_lock = threading.Lock()


os.register_at_fork(after_in_child=_after_fork_in_child)
