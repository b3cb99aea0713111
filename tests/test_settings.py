"""Settings (design §5) as an operator meets them: variables validated at start, named when wrong, secrets
kept out of reprs and logs, `.env` read too. Each test runs in an empty temporary directory, so a stray
`.env` in the work tree cannot change what it sees.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from shared import logs
from shared.logs import RedactingFormatter, redact
from shared.settings import SettingsError, get_settings, load_settings
from tests.conftest import API_TOKEN, AT_API_KEY, METRICS_TOKEN, SECOND_API_TOKEN, WEBHOOK_TOKEN

SECRETS = [AT_API_KEY, WEBHOOK_TOKEN, API_TOKEN, SECOND_API_TOKEN, METRICS_TOKEN]


@pytest.fixture(autouse=True)
def empty_workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("REACH_HOME", str(tmp_path))  # the .env read is the project's (reach_home())
    return tmp_path


@pytest.fixture
def fresh_process_settings() -> Iterator[None]:
    """Forget the process-wide settings before and after, as a newly started process would."""
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def settings_error(monkeypatch: pytest.MonkeyPatch, **env: str) -> str:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError) as caught:
        load_settings()
    return str(caught.value)


# -- validation -------------------------------------------------------------------------------------------

BAD_VALUES = [
    ("DATABASE_URL", "mysql://x", "postgresql://"),
    ("DATABASE_URL", "not a url", "not a database URL"),
    ("DATABASE_URL", "postgresql://reach@db:notaport/reach", ""),
    ("REDIS_URL", "http://x", "redis://"),
    ("REDIS_URL", "localhost:6379", "redis://"),
    ("PORT", "abc", "integer"),
    ("PORT", "70000", "65535"),
    ("PORT", "0", "greater than or equal to 1"),
    ("DEFAULT_COUNTRY", "ZZ", "'ZZ'"),
    ("DEFAULT_COUNTRY", "Kenya", "two-letter"),
    ("AT_SMS_URL", "ftp://x", "http"),
    ("AT_VOICE_URL", "voice.africastalking.com", "http"),
    ("AT_VOICE_NUMBER", "0711", "E.164"),
    ("AT_TIMEOUT_READ", "0", "greater than 0"),
    ("LOG_LEVEL", "LOUD", "DEBUG"),
    ("METRICS_TOKEN", "short", "at least 24 characters"),
    ("METRICS_PUBLIC", "maybe", "boolean"),
    ("DASHBOARD_SESSION_HOURS", "0", "greater than 0"),
    ("DASHBOARD_CYCLES", "1000", "less than or equal to 100"),
    ("DASHBOARD_COOKIE_SECURE", "sometimes", "auto, true or false"),
    ("DASHBOARD_TIMEZONE", "Mars/Olympus", "IANA name such as Africa/Nairobi"),
    ("DASHBOARD_TIMEZONE", "../../etc/passwd", "unknown time zone"),
    ("HOUSEKEEPING_SECONDS", "0", "greater than or equal to 1"),
    ("SMS_WINDOW", "8-20", "HH:MM-HH:MM"),
    ("CALL_WINDOW", "08:00-24:00", "HH:MM-HH:MM"),
    ("CALL_WINDOW", "09:00-09:00", "starts where it ends"),
]


@pytest.mark.parametrize(("variable", "value", "hint"), BAD_VALUES)
def test_bad_variable_is_named_in_upper_case(monkeypatch, variable: str, value: str, hint: str) -> None:
    message = settings_error(monkeypatch, **{variable: value})
    lines = [line.strip() for line in message.splitlines()]
    named = [line for line in lines if line.startswith(f"{variable}:")]
    assert len(named) == 1, message
    assert hint in named[0]
    assert variable.lower() + ":" not in message


#: Secrets too short to stand up to guessing; each value is distinctive, so its absence from the message shows
#: the message never prints it.
WEAK_SECRETS = [
    ("API_TOKEN", "Qz7a"),
    ("WEBHOOK_TOKEN", "x9Kw"),
    ("API_TOKEN", f"{API_TOKEN},rotated-but-short-Qz7"),  # every token of a list counts
    ("WEBHOOK_TOKEN", f"hook-23-characters-Qz7a,{WEBHOOK_TOKEN}"),  # 23 characters: one short
    ("METRICS_TOKEN", "metrics-23-characters-Q"),
]


@pytest.mark.parametrize(("variable", "value"), WEAK_SECRETS)
def test_a_short_secret_stops_start_up_naming_the_variable_not_the_secret(monkeypatch, variable, value) -> None:
    message = settings_error(monkeypatch, **{variable: value})
    named = [line.strip() for line in message.splitlines() if line.strip().startswith(f"{variable}:")]
    assert len(named) == 1 and "at least 24 characters" in named[0], message
    for token in value.split(","):
        if token not in (API_TOKEN, WEBHOOK_TOKEN):
            assert token not in message


@pytest.mark.parametrize(
    ("env", "variable", "other", "shared"),
    [
        ({"WEBHOOK_TOKEN": API_TOKEN}, "API_TOKEN", "WEBHOOK_TOKEN", API_TOKEN),
        ({"WEBHOOK_TOKEN": f"{WEBHOOK_TOKEN},{SECOND_API_TOKEN}"}, "API_TOKEN", "WEBHOOK_TOKEN", SECOND_API_TOKEN),
        ({"METRICS_TOKEN": SECOND_API_TOKEN}, "METRICS_TOKEN", "API_TOKEN", SECOND_API_TOKEN),
        ({"METRICS_TOKEN": WEBHOOK_TOKEN}, "METRICS_TOKEN", "WEBHOOK_TOKEN", WEBHOOK_TOKEN),
    ],
    ids=["api=webhook", "rotated-webhook=api", "metrics=api", "metrics=webhook"],
)
def test_one_secret_in_two_variables_stops_start_up(monkeypatch, env, variable, other, shared) -> None:
    message = settings_error(monkeypatch, **env)
    named = [line.strip() for line in message.splitlines() if line.strip().startswith(f"{variable}:")]
    assert len(named) == 1 and other in named[0], message
    assert shared not in message


def test_empty_secrets_stay_allowed(monkeypatch) -> None:
    """Unset, each keeps its closed or documented default: no callback token, API and metrics closed."""
    for name in ("API_TOKEN", "WEBHOOK_TOKEN", "METRICS_TOKEN"):
        monkeypatch.setenv(name, "")
    settings = load_settings()
    assert (settings.api_tokens, settings.webhook_tokens, settings.metrics_token.get_secret_value()) == ([], [], "")


def test_bad_override_is_named_like_the_variable() -> None:
    with pytest.raises(SettingsError, match=r"(?m)^\s*PORT: "):
        load_settings(port="abc")


def test_every_bad_variable_is_named_at_once(monkeypatch) -> None:
    message = settings_error(
        monkeypatch,
        DATABASE_URL="mysql://x",
        REDIS_URL="http://x",
        PORT="70000",
        DEFAULT_COUNTRY="ZZ",
        AT_SMS_URL="ftp://x",
        AT_VOICE_NUMBER="0711",
    )
    for variable in ("DATABASE_URL", "REDIS_URL", "PORT", "DEFAULT_COUNTRY", "AT_SMS_URL", "AT_VOICE_NUMBER"):
        assert f"{variable}:" in message
    # The good ones are not blamed.
    for variable in ("API_TOKEN", "WEBHOOK_TOKEN", "AT_VOICE_URL", "AT_USERNAME"):
        assert variable not in message


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("DATABASE_URL", "mysql://reach:hunter2@db.example/reach"),
        ("DATABASE_URL", "postgresql//reach:hunter2@db.example/reach"),
        ("DATABASE_URL", "postgresql://reach:hunter2@db.example:port/reach"),
        ("REDIS_URL", "http://:hunter2@cache.example:6379/0"),
    ],
)
def test_error_never_echoes_a_password(monkeypatch, variable: str, value: str) -> None:
    message = settings_error(monkeypatch, **{variable: value})
    assert f"{variable}:" in message
    assert "hunter2" not in message


@pytest.mark.parametrize(
    ("variable", "value", "attribute", "expected"),
    [
        ("DATABASE_URL", "postgresql://reach@db/reach", "database_url", "postgresql://reach@db/reach"),
        ("DATABASE_URL", "sqlite:///var/reach.sqlite3", "database_url", "sqlite:///var/reach.sqlite3"),
        ("REDIS_URL", "rediss://cache.example:6380/1", "redis_url", "rediss://cache.example:6380/1"),
        ("REDIS_URL", "unix:///run/redis.sock", "redis_url", "unix:///run/redis.sock"),
        ("PORT", "65535", "port", 65535),
        ("DEFAULT_COUNTRY", "ug", "default_country", "UG"),
        ("AT_VOICE_NUMBER", "+254711082000", "at_voice_number", "+254711082000"),
        ("LOG_LEVEL", "debug", "log_level", "DEBUG"),
        ("METRICS_PUBLIC", "true", "metrics_public", True),
        ("DASHBOARD_COOKIE_SECURE", "false", "dashboard_cookie_secure", False),
        ("DASHBOARD_COOKIE_SECURE", "TRUE", "dashboard_cookie_secure", True),
        ("DASHBOARD_COOKIE_SECURE", "auto", "dashboard_cookie_secure", None),
        ("DASHBOARD_COOKIE_SECURE", "", "dashboard_cookie_secure", None),
        ("DASHBOARD_CYCLES", "25", "dashboard_cycles", 25),
        ("HOUSEKEEPING_SECONDS", "2", "housekeeping_seconds", 2.0),
        ("SMS_WINDOW", " 21:00-07:30 ", "sms_window", "21:00-07:30"),
        ("CALL_WINDOW", "Always", "call_window", "always"),
    ],
)
def test_good_values_are_accepted(monkeypatch, variable: str, value: str, attribute: str, expected: object) -> None:
    monkeypatch.setenv(variable, value)
    assert getattr(load_settings(), attribute) == expected


# -- secrets ----------------------------------------------------------------------------------------------


def test_secrets_never_show_in_repr_or_str() -> None:
    settings = load_settings()
    # The environment really configured them (otherwise the check below proves nothing)...
    assert settings.at_api_key.get_secret_value() == AT_API_KEY
    assert settings.webhook_token.get_secret_value() == WEBHOOK_TOKEN
    assert settings.api_tokens == [API_TOKEN, SECOND_API_TOKEN]
    # ...and no way of printing the settings shows them.
    for shown in (repr(settings), str(settings), f"{settings}", settings.model_dump_json()):
        for secret in SECRETS:
            assert secret not in shown


def test_secrets_from_env_file_are_hidden_too(empty_workdir: Path, monkeypatch) -> None:
    monkeypatch.delenv("API_TOKEN")
    (empty_workdir / ".env").write_text("API_TOKEN=file-token-one-0123456789abcd,file-token-two-0123456789abcd\n")
    settings = load_settings()
    assert settings.api_tokens == ["file-token-one-0123456789abcd", "file-token-two-0123456789abcd"]
    assert "file-token" not in repr(settings)
    assert "file-token" not in str(settings)


# -- .env -------------------------------------------------------------------------------------------------


def test_env_file_is_read(empty_workdir: Path, monkeypatch) -> None:
    for name in ("DEFAULT_COUNTRY", "AT_SENDER_ID", "HOST"):
        monkeypatch.delenv(name, raising=False)
    (empty_workdir / ".env").write_text(
        "# comment line\nDEFAULT_COUNTRY=tz\nAT_SENDER_ID='REACH'\nhost=0.0.0.0\nSOMETHING_UNRELATED=1\n"
    )
    settings = load_settings()
    assert (settings.default_country, settings.at_sender_id, settings.host) == ("TZ", "REACH", "0.0.0.0")


def test_environment_wins_over_env_file(empty_workdir: Path, monkeypatch) -> None:
    monkeypatch.setenv("DEFAULT_COUNTRY", "UG")
    (empty_workdir / ".env").write_text("DEFAULT_COUNTRY=TZ\nAT_USERNAME=from-the-file\n")
    settings = load_settings()
    assert settings.default_country == "UG"
    assert settings.at_username == "sandbox"  # conftest's environment


def test_bad_value_in_env_file_is_named(empty_workdir: Path, monkeypatch) -> None:
    monkeypatch.delenv("DEFAULT_COUNTRY", raising=False)
    (empty_workdir / ".env").write_text("DEFAULT_COUNTRY=ZZ\n")
    with pytest.raises(SettingsError, match="DEFAULT_COUNTRY: unknown region 'ZZ'"):
        load_settings()


def test_defaults_without_env_or_env_file(monkeypatch) -> None:
    for name in ("DEFAULT_COUNTRY", "HOST", "PORT"):
        monkeypatch.delenv(name, raising=False)
    settings = load_settings()
    assert (settings.default_country, settings.host, settings.port) == ("KE", "127.0.0.1", 8000)


def test_send_windows_default_to_sms_always_and_calls_by_day(monkeypatch) -> None:
    """Design §4.2: SMS at any hour, calls 08:00-20:00 in the customer's local time."""
    for name in ("SMS_WINDOW", "CALL_WINDOW"):
        monkeypatch.delenv(name, raising=False)
    settings = load_settings()
    assert (settings.sms_window, settings.call_window) == ("always", "08:00-20:00")


def test_observability_defaults_are_closed(monkeypatch) -> None:
    for name in ("METRICS_TOKEN", "METRICS_PUBLIC", "DASHBOARD_COOKIE_SECURE"):
        monkeypatch.delenv(name, raising=False)
    settings = load_settings()
    assert settings.metrics_token.get_secret_value() == "" and settings.metrics_public is False
    # Auto: `Secure` whenever the browser came over HTTPS; over plain HTTP a Secure cookie would be dropped.
    assert settings.dashboard_cookie_secure is None


# -- derived values ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("username", "sms_url", "voice_url"),
    [
        ("sandbox", "https://api.sandbox.africastalking.com/version1", "https://voice.sandbox.africastalking.com"),
        ("acme-ltd", "https://api.africastalking.com/version1", "https://voice.africastalking.com"),
        ("", "https://api.africastalking.com/version1", "https://voice.africastalking.com"),
    ],
)
def test_at_urls_default_by_username(username: str, sms_url: str, voice_url: str) -> None:
    settings = load_settings(at_username=username, at_sms_url="", at_voice_url="")
    assert (settings.sms_base_url, settings.voice_base_url) == (sms_url, voice_url)
    assert settings.is_sandbox is (username == "sandbox")


@pytest.mark.parametrize("username", ["sandbox", "acme-ltd"])
def test_explicit_at_urls_win_without_trailing_slash(monkeypatch, username: str) -> None:
    monkeypatch.setenv("AT_USERNAME", username)
    monkeypatch.setenv("AT_SMS_URL", "http://127.0.0.1:9999/version1/")
    monkeypatch.setenv("AT_VOICE_URL", "https://voice.example.test//")
    settings = load_settings()
    assert settings.sms_base_url == "http://127.0.0.1:9999/version1"
    assert settings.voice_base_url == "https://voice.example.test"


ONE, TWO = "first-token-0123456789abcdef", "second-token-0123456789abcdef"


@pytest.mark.parametrize(
    ("raw", "tokens"),
    [
        (ONE, [ONE]),
        (f"{ONE},{TWO}", [ONE, TWO]),
        (f" {ONE} , ,{TWO},, ", [ONE, TWO]),
        ("", []),
        (" , ,", []),
    ],
)
def test_api_tokens_split_on_commas_ignoring_blanks(raw: str, tokens: list[str]) -> None:
    assert load_settings(api_token=raw).api_tokens == tokens


# -- the app refuses to start with a bad setting ----------------------------------------------------------


@pytest.mark.usefixtures("fresh_process_settings")
@pytest.mark.parametrize(("variable", "value"), [("DATABASE_URL", "mysql://x"), ("REDIS_URL", "http://x")])
def test_create_app_fails_at_start_naming_the_variable(monkeypatch, variable: str, value: str) -> None:
    from web import create_app

    monkeypatch.setenv(variable, value)
    # As the receiver starts it: `web:create_app()` reads the process settings.
    with pytest.raises(SettingsError, match=f"{variable}:"):
        create_app()
    # As a caller building the settings first.
    with pytest.raises(SettingsError, match=f"{variable}:"):
        create_app(load_settings())


def test_create_app_with_good_settings_uses_them() -> None:
    from web import create_app

    settings = load_settings(api_token="only-this-token-0123456789")
    app = create_app(settings)
    try:
        assert app.extensions["reach.settings"] is settings
        assert (
            app.test_client().get("/api/contacts", headers={"Authorization": f"Bearer {API_TOKEN}"}).status_code == 401
        )
    finally:
        app.extensions["reach"].close()


# -- redaction --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("postgresql://user:pw@host/db", "postgresql://user:***@host/db"),
        (
            "postgresql+psycopg://reach:s3cr%40t@db.example:5432/reach",
            "postgresql+psycopg://reach:***@db.example:5432/reach",
        ),
        ("redis://:pw@host", "redis://:***@host"),
        ("rediss://default:pw@cache.example:6380/0", "rediss://default:***@cache.example:6380/0"),
        (
            "callback https://reach.example/dlr?token=abc123 failed",
            "callback https://reach.example/dlr?token=*** failed",
        ),
        ("/dlr?token=abc123&id=ATXid_1", "/dlr?token=***&id=ATXid_1"),
        ("/voice?id=1&TOKEN=abc123", "/voice?id=1&TOKEN=***"),
        ("GET /x?apiKey=abc123", "GET /x?apiKey=***"),
        ("two: redis://:a1@h1 and postgresql://u:b2@h2/db", "two: redis://:***@h1 and postgresql://u:***@h2/db"),
    ],
)
def test_redact_hides_url_passwords_and_tokens(text: str, expected: str) -> None:
    assert redact(text, []) == expected


@pytest.mark.parametrize(
    "text",
    [
        "redis://127.0.0.1:6379/0",
        "postgresql://reach@db.example:5432/reach",
        "http://127.0.0.1:8000/dlr?id=ATXid_1",
        "sent to +254711000001 with status Success",
    ],
)
def test_redact_leaves_harmless_text_alone(text: str) -> None:
    assert redact(text, [AT_API_KEY]) == text


def test_redact_removes_every_configured_secret_everywhere() -> None:
    text = f"key={AT_API_KEY} again {AT_API_KEY}; Authorization: Bearer {SECOND_API_TOKEN}; hook {WEBHOOK_TOKEN}"
    cleaned = redact(text, SECRETS)
    for secret in SECRETS:
        assert secret not in cleaned
    assert cleaned.startswith("key=*** again ***; Authorization: Bearer ***")


def test_configured_secrets_include_each_rotated_token(fresh_process_settings) -> None:
    configured = logs.configured_secrets()
    for secret in SECRETS:
        assert secret in configured


@pytest.fixture
def secret_log() -> Iterator[tuple[logging.Logger, io.StringIO]]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(RedactingFormatter("%(levelname)s %(name)s: %(message)s", [*SECRETS, "", "ab"]))
    logger = logging.getLogger("reach.test.redaction")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    yield logger, stream
    logger.removeHandler(handler)
    logger.propagate = True


def test_log_line_with_a_secret_comes_out_without_it(secret_log) -> None:
    logger, stream = secret_log
    logger.info("calling AT with apiKey %s for %s", AT_API_KEY, "redis://:hunter2@cache/0")
    line = stream.getvalue()
    assert line == "INFO reach.test.redaction: calling AT with apiKey *** for redis://:***@cache/0\n"


def test_traceback_with_a_secret_comes_out_without_it(secret_log) -> None:
    logger, stream = secret_log
    try:
        raise ValueError(f"AT refused key {AT_API_KEY} at https://host/dlr?token={WEBHOOK_TOKEN}")
    except ValueError:
        logger.exception("send failed with token %s", API_TOKEN)
    output = stream.getvalue()
    assert "Traceback (most recent call last)" in output
    assert "ValueError: AT refused key *** at https://host/dlr?token=***" in output
    for secret in SECRETS:
        assert secret not in output


def test_too_short_secrets_do_not_mangle_logs(secret_log) -> None:
    logger, stream = secret_log
    logger.info("about a cab")
    assert stream.getvalue().endswith("about a cab\n")


def test_callback_retention_must_cover_the_unmatched_report_window() -> None:
    with pytest.raises(SettingsError, match="CALLBACK_RETENTION_DAYS must cover UNMATCHED_DLR_HOURS"):
        load_settings(callback_retention_days=1, unmatched_dlr_hours=48)
    assert load_settings(callback_retention_days=2, unmatched_dlr_hours=48).callback_retention_days == 2
