"""Every setting Reach reads, in one typed place (design §5).

Values come from the environment, then from a `.env` file in the working directory. `load_settings()`
validates them once at start-up and raises `SettingsError` with one line per bad variable, named as the
operator spells it (`DATABASE_URL: ...`). Secrets are `SecretStr`, so they never show in a repr or a log.
"""

from __future__ import annotations

import functools
import os
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import phonenumbers
from pydantic import Field, SecretStr, ValidationError, ValidationInfo, field_validator, model_validator
from pydantic_settings import NoDecode, SettingsConfigDict
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from shared.cost_estimate import parse_sms_costs
from shared.guard_settings import GuardSettings
from shared.intake_settings import IntakeSettings
from shared.text_rules import too_long
from shared.timing_settings import TimingSettings
from shared.voice_script import XML_FORBIDDEN


def reach_home() -> Path:
    """The project `reach` belongs to, where its `.env` and `var/` are, wherever a command is run from:
    REACH_HOME when set; else the checkout this code runs from (`make install`'s editable `.venv/bin/reach`);
    else (an installed package, e.g. the images' /app) the current directory."""
    if os.environ.get("REACH_HOME"):
        return Path(os.environ["REACH_HOME"]).resolve()
    checkout = Path(__file__).resolve().parents[1]
    if (checkout / "pyproject.toml").is_file() and (checkout / "reach_cli").is_dir():
        return checkout
    return Path.cwd()


#: Embedded defaults for a machine with nothing configured (design §3): files under the project's var/, or
#: under REACH_VAR_DIR when set (read from the environment only: it says where `.env`-less runs keep their files).
VAR_DIR = Path(os.environ.get("REACH_VAR_DIR") or reach_home() / "var")

LIVE_SMS_URL = "https://api.africastalking.com/version1"
LIVE_VOICE_URL = "https://voice.africastalking.com"
SANDBOX_SMS_URL = "https://api.sandbox.africastalking.com/version1"
SANDBOX_VOICE_URL = "https://voice.sandbox.africastalking.com"


DEFAULT_VOICE_GREETING = "Hello. This is an automated line. Please check your text messages. Goodbye."
#: The longest VOICE_GREETING: a greeting, not a message (those are up to shared.cycles.MAX_MESSAGE).
MAX_VOICE_GREETING = 300
#: Shortest token accepted in API_TOKEN, WEBHOOK_TOKEN (each of a comma-separated list) and METRICS_TOKEN: 24
#: random URL-safe characters carry 144 bits. What `reach up` generates (`secrets.token_urlsafe(24)`) has 32.
MIN_SECRET_LENGTH = 24
#: The secrets, in the order they are declared (and so validated) below: no token may be in two.
TOKEN_SETTINGS = ("webhook_token", "api_token", "metrics_token", "erasure_key")
#: How a boolean may be spelt in the environment (pydantic's own words, for the settings it cannot parse alone).
TRUE_WORDS = frozenset({"true", "1", "yes", "y", "on", "t"})
FALSE_WORDS = frozenset({"false", "0", "no", "n", "off", "f"})


def split_tokens(raw: str) -> list[str]:
    """A comma-separated token list, blanks ignored (API_TOKEN, WEBHOOK_TOKEN)."""
    return [t.strip() for t in raw.split(",") if t.strip()]


def tokens_of(name: str, value: SecretStr) -> list[str]:
    """The tokens a secret setting holds: METRICS_TOKEN is one token, the others are lists."""
    raw = value.get_secret_value()
    if name == "metrics_token":
        return [raw.strip()] if raw.strip() else []
    return split_tokens(raw)


class SettingsError(ValueError):
    """A setting is missing or malformed; the message names each bad variable."""


class Settings(GuardSettings, IntakeSettings, TimingSettings):
    """Every setting; DLR_SILENCE_SECONDS and INCIDENT_* are GuardSettings' (shared/guard_settings.py)."""

    model_config = SettingsConfigDict(
        env_file=".env", env_file_encoding="utf-8", extra="ignore", case_sensitive=False, frozen=True
    )

    def __init__(self, **values: Any) -> None:
        # The project's .env (reach_home()), not the current directory's: read per instance, so REACH_HOME counts.
        values.setdefault("_env_file", reach_home() / ".env")
        super().__init__(**values)

    # repr=False: these URLs may carry passwords.
    database_url: str = Field(default="", repr=False, description="SQLAlchemy URL; Postgres in production")
    redis_url: str = Field(default="", repr=False, description="broker and callback inbox; Redis in production")

    at_username: str = ""
    at_api_key: SecretStr = SecretStr("")
    at_sender_id: str = ""
    at_voice_number: str = ""
    at_sms_url: str = ""
    at_voice_url: str = ""
    at_timeout_connect: float = Field(default=3.05, gt=0, le=60)
    at_timeout_read: float = Field(default=9.05, gt=0, le=120)

    webhook_token: SecretStr = SecretStr("")
    api_token: SecretStr = SecretStr("")
    default_country: str = "KE"

    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)

    log_level: str = "INFO"

    # -- communication cycles ---------------------------------------------------------------------------
    #: Recipients of the same text in one AT /messaging request.
    sms_batch_size: int = Field(default=100, ge=1, le=1000)
    #: SMS handed to AT per second, across all workers.
    send_rate_per_second: float = Field(default=50.0, gt=0, le=10_000)
    #: Voice calls placed and not yet ended, across all workers.
    max_calls_in_flight: int = Field(default=10, ge=1, le=1000)
    #: Extra calls to a contact who was busy or did not answer, within one cycle, and the wait between.
    call_retries: int = Field(default=2, ge=0, le=10)
    call_retry_delay_seconds: int = Field(default=600, ge=0, le=86_400)
    #: How long AT lets a call ring before it ends it unanswered. AT does not document it (at-api.md §5);
    #: it only bounds how long a call may hold its slot without a final callback (worker.cycles.call_limit).
    call_ring_timeout_seconds: int = Field(default=60, ge=0, le=600)
    #: Added to the longest call a message can make before a call with no final callback is recorded
    #: `unknown` and its slot freed: AT's call queue and the final callback's trip and retries.
    call_limit_margin_seconds: int = Field(default=120, ge=0, le=86_400)
    #: What a live call hears when it is not a call Reach placed to that number (an inbound call, a session
    #: Reach does not know, another caller): never a customer's message (issue 12), and nothing to confirm.
    voice_greeting: str = DEFAULT_VOICE_GREETING
    #: The language whose `voice_message` entry a contact gets when there is none for theirs (else the first).
    default_language: str = Field(default="en", pattern=r"^[a-z]{2,3}(-[A-Z]{2}|-[0-9]{3})?$")
    #: Attempts at a send AT failed transiently (5xx, 429, connection errors) before it is recorded failed.
    send_attempts: int = Field(default=5, ge=1, le=20)
    #: How long an interrupted send (worker killed while AT was answering) waits for a delivery report
    #: proving it went out before it is sent again.
    unknown_send_grace_seconds: int = Field(default=900, ge=0, le=86_400)
    #: The grace actually used is the larger of UNKNOWN_SEND_GRACE_SECONDS and the recent P99 of how long AT
    #: took to post a message's first delivery report (worker/unknown_sends.py), the latter capped here.
    unknown_send_grace_max_seconds: int = Field(default=3600, ge=0, le=86_400)
    #: A delivery report that matches no message is looked at for this long (rescanned in case its message
    #: appears, adopted by an interrupted send of that number); afterwards it is kept for audit only.
    unmatched_dlr_hours: int = Field(default=48, ge=1, le=24 * 365)
    #: Raw callbacks, delivery reports and call events are deleted by housekeeping after this many days.
    callback_retention_days: int = Field(default=90, ge=1, le=3650)
    #: An operator API import's refused rows (its `refused_url`) are deleted by housekeeping after this many days.
    import_retention_days: int = Field(default=7, ge=1, le=3650)
    #: How long a dispatcher may hold claimed items before they count as interrupted (never less than an AT
    #: request can take: connect + read timeout + 10 s).
    dispatch_lease_seconds: int = Field(default=60, ge=1, le=3600)
    #: How often beat looks for due schedules.
    schedule_tick_seconds: float = Field(default=30.0, ge=0.5, le=3600)
    #: The shortest time a schedule may leave between two of its cycles (every contact, each time): a cron
    #: expression that fires twice within less, anywhere in the calendar, is refused. A minute is cron's step.
    schedule_min_interval_seconds: int = Field(default=3600, ge=60, le=31 * 86_400)
    #: A schedule's period whose first tick comes later than this after its planned time (beat was down, the
    #: broker backed up) is recorded missed, not started late (design §4.2): no 09:00 message at 23:30.
    schedule_misfire_seconds: int = Field(default=3600, gt=0, le=366 * 86_400)
    #: How often beat runs the housekeeping tasks (interrupted drains and sends, overdue calls, pruning). Each
    #: is idempotent and cheap when there is nothing to do; a shorter period only settles interrupted work
    #: sooner (the tests use 2 s).
    housekeeping_seconds: float = Field(default=15.0, ge=1, le=300)
    #: Where alerts are also POSTed as JSON (shared/alerts.py); empty: log, metric and dashboard only. May carry
    #: a secret in its query string, so it is never logged whole.
    alert_webhook_url: SecretStr = SecretStr("")
    #: For estimates only (dry runs, a cycle's `estimated_cost`): what one SMS part costs, in `cost_currency`:
    #: one price, or a table by the number's country (`KE=0.80,NG=2.50,default=1.00`, or as JSON).
    sms_cost_estimate: Annotated[dict[str, Decimal], NoDecode] = Field(default={"default": Decimal("0.80")})
    call_cost_estimate: Decimal = Field(default=Decimal("3.00"), ge=0)
    cost_currency: str = Field(default="KES", min_length=3, max_length=3)

    # -- observability ------------------------------------------------------------------------------------
    #: Bearer token Prometheus sends to `GET /metrics` (its `authorization` scrape setting). Unset: /metrics
    #: answers 401 unless METRICS_PUBLIC=true says the port is reachable only from a trusted network.
    metrics_token: SecretStr = SecretStr("")
    #: Key(s) of the hashes an erased contact's number is kept as (shared/erasure.py), comma-separated: the
    #: first hashes new erasures, all are checked. Unset: a key Reach keeps in the database.
    erasure_key: SecretStr = SecretStr("")
    metrics_public: bool = False
    #: How long a dashboard login lasts; a removed API_TOKEN ends its sessions at once.
    dashboard_session_hours: float = Field(default=12.0, gt=0, le=24 * 30)
    #: Most recent cycles the dashboard shows.
    dashboard_cycles: int = Field(default=10, ge=1, le=100)
    #: Mark the dashboard cookie `Secure` (kept and sent over HTTPS only): true, false, or unset/`auto` (None):
    #: when the browser came over HTTPS (web/dashboard_auth.py). A browser drops a Secure cookie set over plain
    #: HTTP to any host but localhost, so `true` makes signing in at http://192.168.x.y fail.
    dashboard_cookie_secure: bool | None = None
    #: The zone the dashboard shows times in (an IANA name such as Africa/Nairobi), always with its name.
    dashboard_timezone: str = "UTC"

    @field_validator("database_url")
    @classmethod
    def _database_url(cls, value: str) -> str:
        if not value:
            return value
        try:
            url = make_url(value)
        except ArgumentError as exc:
            raise ValueError(f"not a database URL ({exc})") from None
        if url.get_backend_name() not in {"postgresql", "sqlite"}:
            raise ValueError("must be a postgresql:// or sqlite:// URL")
        return value

    @field_validator("redis_url")
    @classmethod
    def _redis_url(cls, value: str) -> str:
        if value and not value.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("must start with redis://, rediss:// or unix://")
        return value

    @field_validator("at_sms_url", "at_voice_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if value and not value.startswith(("http://", "https://")):
            raise ValueError("must be an http:// or https:// URL")
        return value.rstrip("/")

    @field_validator("alert_webhook_url")
    @classmethod
    def _webhook_url(cls, value: SecretStr) -> SecretStr:
        # The message names no part of the URL: it may carry a secret.
        if value.get_secret_value() and not value.get_secret_value().startswith(("http://", "https://")):
            raise ValueError("must be an http:// or https:// URL")
        return value

    @field_validator("at_voice_number")
    @classmethod
    def _voice_number(cls, value: str) -> str:
        if value and not value.startswith("+"):
            raise ValueError("must be in E.164 form, starting with +")
        return value

    @field_validator("sms_cost_estimate", mode="before")
    @classmethod
    def _sms_costs(cls, value: object) -> dict[str, Decimal]:
        return parse_sms_costs(value)

    @field_validator("dashboard_timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        try:
            return ZoneInfo(value).key
        except (ZoneInfoNotFoundError, ValueError, OSError):
            raise ValueError(f"unknown time zone {value!r}; use an IANA name such as Africa/Nairobi or UTC") from None

    @field_validator("default_country")
    @classmethod
    def _country(cls, value: str) -> str:
        value = value.upper()
        if value not in phonenumbers.SUPPORTED_REGIONS:
            raise ValueError(f"unknown region {value!r}; use a two-letter code such as KE")
        return value

    @field_validator(*TOKEN_SETTINGS)
    @classmethod
    def _strong_distinct_tokens(cls, value: SecretStr, info: ValidationInfo) -> SecretStr:
        """Each token long enough to resist guessing, and used for one purpose only: a webhook token sits in
        AT's callback URLs, so it must never also open the operator API. Empty stays allowed (each setting's
        closed default). Messages never show a token, only where it sits in its list."""
        name = str(info.field_name)
        tokens = tokens_of(name, value)
        for position, token in enumerate(tokens, start=1):
            if len(token) < MIN_SECRET_LENGTH:
                which = f" (token {position} of {len(tokens)} is shorter)" if len(tokens) > 1 else ""
                raise ValueError(
                    f"must be at least {MIN_SECRET_LENGTH} characters{which}; generate one with "
                    "python3 -c 'import secrets; print(secrets.token_urlsafe(32))'"
                )
        # Settings are validated in declaration order, so `info.data` holds the secrets declared before this one
        # (absent when that one was itself refused).
        for other in TOKEN_SETTINGS[: TOKEN_SETTINGS.index(name)]:
            earlier = info.data.get(other)
            if earlier is not None and set(tokens) & set(tokens_of(other, earlier)):
                raise ValueError(f"shares a token with {other.upper()}: every secret must be different")
        return value

    @field_validator("voice_greeting")
    @classmethod
    def _voice_greeting(cls, value: str) -> str:
        forbidden = XML_FORBIDDEN.search(value)
        if forbidden:
            raise ValueError(f"has a character AT cannot speak: U+{ord(forbidden.group()):04X}")
        value = value.strip()
        if not value:
            raise ValueError("must not be empty (it is what a call Reach did not place hears)")
        if problem := too_long(value, MAX_VOICE_GREETING):
            raise ValueError(problem)
        return value

    @field_validator("schedule_misfire_seconds")
    @classmethod
    def _misfire_spans_two_ticks(cls, value: int, info: ValidationInfo) -> int:
        # A period is seen only at a tick, up to one interval after its time, later if that tick waited in the
        # queue: a shorter window would record periods missed that beat ticked on time.
        tick = info.data.get("schedule_tick_seconds")
        if tick is not None and value < 2 * tick:
            raise ValueError(
                f"must be at least twice SCHEDULE_TICK_SECONDS ({tick:g} s): ticks on time would miss periods"
            )
        return value

    @field_validator("dashboard_cookie_secure", mode="before")
    @classmethod
    def _auto_or_bool(cls, value: object) -> object:
        if not isinstance(value, str):
            return value
        spelled = value.strip().lower()
        if spelled in ("", "auto"):
            return None
        if spelled in TRUE_WORDS or spelled in FALSE_WORDS:
            return spelled in TRUE_WORDS
        raise ValueError("must be auto, true or false")

    @field_validator("log_level")
    @classmethod
    def _log_level(cls, value: str) -> str:
        value = value.upper()
        if value not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
            raise ValueError("must be DEBUG, INFO, WARNING, ERROR or CRITICAL")
        return value

    @model_validator(mode="after")
    def _retention_outlives_matching(self) -> Settings:
        if self.callback_retention_days * 24 < self.unmatched_dlr_hours:
            raise ValueError(
                "CALLBACK_RETENTION_DAYS must cover UNMATCHED_DLR_HOURS: a report still being matched is never pruned"
            )
        return self

    # -- derived values -------------------------------------------------------------------------------

    @property
    def uses_real_at(self) -> bool:
        """True when AT credentials are configured; otherwise Reach talks to its simulator."""
        return bool(self.at_username and self.at_api_key.get_secret_value())

    @property
    def is_sandbox(self) -> bool:
        return self.at_username == "sandbox"

    @property
    def sms_base_url(self) -> str:
        if self.at_sms_url:
            return self.at_sms_url
        return SANDBOX_SMS_URL if self.is_sandbox else LIVE_SMS_URL

    @property
    def voice_base_url(self) -> str:
        if self.at_voice_url:
            return self.at_voice_url
        return SANDBOX_VOICE_URL if self.is_sandbox else LIVE_VOICE_URL

    @property
    def dispatch_lease(self) -> float:
        return max(float(self.dispatch_lease_seconds), self.at_timeout_connect + self.at_timeout_read + 10)

    @property
    def api_tokens(self) -> list[str]:
        """Operator tokens: several may be valid at once, so one can be rotated without downtime."""
        return split_tokens(self.api_token.get_secret_value())

    @property
    def webhook_tokens(self) -> list[str]:
        """Callback tokens, comma-separated like API_TOKEN: the old one stays valid while AT's callback URLs
        change to the new one. The first is the one Reach hands out (simulator, printed URLs)."""
        return split_tokens(self.webhook_token.get_secret_value())

    @property
    def erasure_keys(self) -> list[str]:
        return split_tokens(self.erasure_key.get_secret_value())

    @property
    def effective_database_url(self) -> str:
        return self.database_url or f"sqlite:///{VAR_DIR / 'reach.sqlite3'}"

    @property
    def uses_redis(self) -> bool:
        """Redis carries Celery, the inbox and the caches; without it all live in SQLite files (embedded)."""
        return bool(self.redis_url)

    @property
    def effective_broker_url(self) -> str:
        """Celery's broker: Redis, or kombu's SQLAlchemy transport on its own SQLite file under var/."""
        return self.redis_url or f"sqla+sqlite:///{VAR_DIR / 'broker.sqlite3'}"


def load_settings(**overrides: object) -> Settings:
    """Read and validate the settings; raise `SettingsError` naming every bad variable."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        lines = []
        for error in exc.errors():
            name = ".".join(str(part) for part in error["loc"]).upper() or "settings"
            lines.append(f"{name}: {error['msg'].removeprefix('Value error, ')}")
        raise SettingsError("invalid settings:\n  " + "\n  ".join(lines)) from None


@functools.cache
def get_settings() -> Settings:
    """The process-wide settings, read once."""
    return load_settings()
