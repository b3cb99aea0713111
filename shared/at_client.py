"""Africa's Talking, as Reach uses it: send SMS and place calls through the official SDK (at-api.md §1).

`AtClient` wraps `africastalking==2.0.3`. It points the SDK at the configured base URLs (the live or
sandbox AT, or the loopback simulator), always calls synchronously with Reach's timeouts, turns the
SDK's answers into frozen dataclasses, and classifies every answer once, here (style.md §4), into one
of three outcomes:

- **Known outcome per recipient**: AT's own JSON answer (`SMSMessageData` for a send; `entries` or
  `errorMessage` for a call), whatever its Content-Type (the SDK hands back a str for anything but
  exactly `application/json`) and whatever HTTP status carries it (the SDK raises
  `AfricasTalkingException(res.text)` for every non-2xx, e.g. the 409 DoNotDisturbRejection).
  Returned as `SmsSendResult` / `CallResult`.
- **Known not sent**, raised with `maybe_sent` False:
  - `AtTransient`, worth retrying with backoff: the request never went out (connection refused, DNS
    failure, TLS failure, connect timeout), or AT refused it before acting (HTTP 429 "too many
    requests": a throttle rejects before the route runs);
  - `AtRejected`, permanent: AT's own documented refusals (401 `The supplied authentication is
    invalid`, 400 `Request is missing required form field ...`), a number the SDK's own check refuses
    before any HTTP, a base URL that is not one.
- **Maybe sent**, `AtMaybeSent` (`maybe_sent` True): everything else. A read timeout, a connection
  reset or closed after the request was written, a proxy's page (502/504 HTML, an empty body, any
  body that is not AT's), a 2xx whose body is unreadable, truncated or not AT's JSON, and akka-http's
  500 and 503 texts too: its 503 "not able to produce a timely response" is its request timeout,
  answered while AT's handler may still be sending. AT may have acted: callers leave the sends
  `submitting` and reconcile them from AT's callbacks; they never send again at once.

`maybe_sent(exc)` is the one predicate callers use. No message of these errors, and no log line,
contains the API key.
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
from collections.abc import Callable
from http import HTTPStatus
from typing import Any, TypeVar

import africastalking
import requests
import urllib3.exceptions
from africastalking.Service import AfricasTalkingException

from shared.at_results import (
    CallEntry,
    CallResult,
    SmsRecipient,
    SmsSendResult,
    call_result,
    parse_cost,
    sms_result,
)
from shared.settings import Settings, get_settings

log = logging.getLogger(__name__)

__all__ = [
    "OVERRIDDEN_ATTRIBUTES",
    "AtClient",
    "AtError",
    "AtMaybeSent",
    "AtRejected",
    "AtTransient",
    "CallEntry",
    "CallResult",
    "SmsRecipient",
    "SmsSendResult",
    "get_at_client",
    "maybe_sent",
    "parse_cost",
    "reset_at_client",
    "status_from_body",
]

#: The SDK's private base-URL attributes that `AtClient` overwrites (at-api.md §1.4). There is no
#: supported way to change the host; if an SDK upgrade renames these, `AtClient()` raises instead of
#: silently sending to the real AT, and tests/test_at_client.py fails.
OVERRIDDEN_ATTRIBUTES: dict[str, tuple[str, ...]] = {"SMS": ("_baseUrl", "_contentUrl"), "Voice": ("_baseUrl",)}

#: What `AtClient._read` builds from AT's JSON.
_Result = TypeVar("_Result")

#: Longest piece of an AT answer quoted in an error message.
_QUOTE_CHARS = 200


class AtError(Exception):
    """Africa's Talking did not do what was asked; `http_status` is None when it is not known.

    `maybe_sent` is set by the class, once, where the answer is classified: True only on `AtMaybeSent`.
    """

    maybe_sent: bool = False

    def __init__(self, message: str, http_status: int | None = None) -> None:
        super().__init__(message)
        self.http_status = http_status


class AtTransient(AtError):
    """Known not sent, worth retrying: the request never went out, or AT throttled it (429)."""


class AtRejected(AtError):
    """Known not sent, permanent: bad credentials, a missing field, a number the SDK refuses."""


class AtMaybeSent(AtError):
    """AT may have acted: the request went out and no answer of AT's that Reach can read came back.

    Never retried blindly: the sends stay `submitting` until AT's callbacks show what happened.
    """

    maybe_sent = True


def maybe_sent(exc: BaseException) -> bool:
    """True when AT may have acted on the request although Reach cannot read an answer of AT's."""
    return isinstance(exc, AtError) and exc.maybe_sent


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
        answer = self._request("SMS send", lambda: self._sms.send(message, numbers, **options), _is_sms_answer)
        result = self._read("SMS send", sms_result, answer)
        log.info("SMS send to %d number(s): %s", len(numbers), result.summary)
        return result

    def call(self, phone_numbers: list[str]) -> CallResult:
        """Call each number from AT_VOICE_NUMBER; the call's XML comes from our voice callback."""
        numbers = _as_list(phone_numbers, "phone_numbers")
        caller = self._settings.at_voice_number
        if not caller:
            raise AtRejected("voice call: AT_VOICE_NUMBER is not configured")
        send = lambda: self._voice.call(caller, numbers, timeout=self._timeout)  # noqa: E731
        result = self._read("voice call", call_result, self._request("voice call", send, _is_call_answer))
        log.info("voice call to %d number(s): %s", len(numbers), result.error_message or "accepted")
        return result

    # -- the one place answers are classified -------------------------------------------------------------

    def _request(
        self, what: str, send: Callable[[], Any], is_answer: Callable[[dict[str, Any]], bool]
    ) -> dict[str, Any]:
        """Run one synchronous SDK call; return AT's JSON answer, or raise AtTransient / AtRejected (known
        not sent) or AtMaybeSent. `is_answer` tells AT's JSON answer from any other JSON."""
        try:
            answer = send()
        except requests.exceptions.RequestException as exc:
            raise self._fail(_transport_error(what, exc, self._redact)) from exc
        except AfricasTalkingException as exc:
            # Any non-2xx. AT's own JSON answer is a known outcome whatever its status (e.g. the 409
            # DoNotDisturbRejection, at-api.md §2.2). `from None`: the SDK's exception is the raw body,
            # which our error quotes redacted.
            body = str(exc)
            payload = _json_object(body)
            if payload is not None and is_answer(payload):
                return payload
            raise self._fail(_http_error(what, body, self._redact)) from None
        except ValueError as exc:  # the SDK validates numbers before any HTTP request
            raise self._fail(AtRejected(f"{what}: {self._redact(str(exc))}")) from exc
        # A 2xx: a dict for exactly `application/json`, else the body as a str (at-api.md §1.5).
        payload = answer if isinstance(answer, dict) else _json_object(str(answer))
        if payload is not None and is_answer(payload):
            return payload
        quoted = self._redact(_quote(str(answer))) or "(empty body)"
        raise self._fail(AtMaybeSent(f"{what}: AT's 2xx answer is not AT's JSON, AT may have acted: {quoted}"))

    def _read(self, what: str, parse: Callable[[dict[str, Any]], _Result], answer: dict[str, Any]) -> _Result:
        """AT's JSON as a result; JSON of AT's shape with unreadable entries means AT may have acted."""
        try:
            return parse(answer)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            detail = f"{what}: unreadable entries in AT's answer ({type(exc).__name__}: {exc}), AT may have acted"
            raise self._fail(AtMaybeSent(self._redact(detail))) from None

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


def _is_sms_answer(payload: dict[str, Any]) -> bool:
    return isinstance(payload.get("SMSMessageData"), dict)


def _is_call_answer(payload: dict[str, Any]) -> bool:
    return isinstance(payload.get("entries"), list) or "errorMessage" in payload


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
# The status is only told in the error; what decides is whether the body is one of AT's own refusals.

#: AT's own refusals, made before it acts (at-api.md §2.2): the body, the status, and whether a retry helps.
_REFUSALS: tuple[tuple[re.Pattern[str], int, type[AtError]], ...] = tuple(
    (re.compile(pattern, re.IGNORECASE), status, kind)
    for pattern, status, kind in (
        (r"^\s*the supplied authentication is invalid\s*$", 401, AtRejected),
        (r"^\s*request is missing required form field\b", 400, AtRejected),
        # akka-http's throttle text, or a proxy's "429 Too Many Requests": a limiter refuses up front.
        (r"too many requests", 429, AtTransient),
    )
)

#: Known bodies of answers that do not prove anything either way (most specific first).
_KNOWN_BODIES: tuple[tuple[re.Pattern[str], int], ...] = tuple(
    (re.compile(pattern, re.IGNORECASE), status)
    for pattern, status in (
        (r"did not receive a timely response|gateway time-?out", 504),
        (r"received an invalid response from the upstream|bad gateway", 502),
        (r"timely response|currently unavailable|service unavailable", 503),
        (r"internal server error", 500),
    )
)
#: "502 Bad Gateway", "<title>504 Gateway Time-out</title>": a status code followed by its own reason.
_STATUS_AND_REASON = re.compile(r"\b([1-5]\d\d)\s+([A-Za-z][A-Za-z -]*)")


def status_from_body(text: str) -> int | None:
    """The HTTP status an AT error body implies, or None when it does not say."""
    for pattern, status, _kind in _REFUSALS:
        if pattern.search(text):
            return status
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


def _http_error(what: str, body: str, redact: Callable[[str], str]) -> AtError:
    """A non-2xx without AT's JSON: one of AT's own refusals (not sent), or anything else (maybe sent)."""
    quoted = redact(_quote(body)) or "(empty body)"
    for pattern, refused_status, kind in _REFUSALS:
        if pattern.search(body):
            return kind(f"{what}: AT refused the request (HTTP {refused_status}): {quoted}", refused_status)
    status = status_from_body(body)
    return AtMaybeSent(f"{what}: HTTP {status or 'error'} without AT's answer, AT may have acted: {quoted}", status)


#: Errors of a base URL that is not one: nothing was sent, and retrying cannot help.
_CONFIGURATION = (
    requests.exceptions.InvalidURL,
    requests.exceptions.MissingSchema,
    requests.exceptions.InvalidSchema,
    requests.exceptions.InvalidHeader,
    requests.exceptions.URLRequired,
)
#: urllib3's reasons for a connection that was never made (refused, DNS, TLS, connect timeout, proxy).
_NOT_CONNECTED = (
    urllib3.exceptions.NewConnectionError,  # refused; NameResolutionError (DNS) is one
    urllib3.exceptions.ConnectTimeoutError,
    urllib3.exceptions.SSLError,
    urllib3.exceptions.ProxyError,
)


def _transport_error(what: str, exc: requests.exceptions.RequestException, redact: Callable[[str], str]) -> AtError:
    detail = f"{what}: {type(exc).__name__}: {redact(_quote(str(exc)))}"
    if isinstance(exc, _CONFIGURATION):
        return AtRejected(detail)
    if _never_went_out(exc):
        return AtTransient(detail)
    if isinstance(exc, requests.exceptions.InvalidJSONError):
        # The SDK calls res.json() on an `application/json` 2xx that turned out not to be JSON.
        return AtMaybeSent(f"{what}: AT's 2xx answer is invalid JSON, AT may have acted")
    # A read timeout, a reset or hang-up after the request was written, a body cut short.
    return AtMaybeSent(f"{detail} (AT may have acted)")


def _never_went_out(exc: requests.exceptions.RequestException) -> bool:
    """True when the request cannot have reached AT: the connection (TCP, TLS, proxy) was never made."""
    if isinstance(exc, requests.exceptions.ConnectTimeout | requests.exceptions.SSLError):
        return True
    if not isinstance(exc, requests.exceptions.ConnectionError):
        return False
    # requests wraps urllib3's error: MaxRetryError(reason=...) when connecting failed, the error
    # itself (ProtocolError: "Connection aborted") when the connection broke after it was made.
    reason = exc.args[0] if exc.args else None
    if isinstance(reason, urllib3.exceptions.MaxRetryError):
        reason = reason.reason
    return isinstance(reason, _NOT_CONNECTED)


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
