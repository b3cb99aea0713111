"""Secrets never reach a log: production's redacting handler at work, and the run-wide check that watches
every log record and subprocess log of the test session (tests/leak_check.py)."""

from __future__ import annotations

import io
import logging
import tempfile
from pathlib import Path

import pytest

from shared.logs import configured_secrets, redacting_handler
from tests.conftest import (
    API_TOKEN,
    AT_API_KEY,
    DATABASE_PASSWORD,
    METRICS_TOKEN,
    REDIS_PASSWORD,
    SECOND_API_TOKEN,
    WEBHOOK_TOKEN,
)
from tests.leak_check import (
    DEMO_LOGGER,
    DEMO_PASSWORD,
    LeakWatcher,
    production_secrets,
    secrets,
    subprocess_log_leaks,
)


@pytest.fixture
def demo_log() -> tuple[logging.Logger, io.StringIO]:
    """A logger writing through the handler every Reach process uses (`shared.logs.configure_logging`)."""
    stream = io.StringIO()
    handler = redacting_handler(stream, configured_secrets())
    logger = logging.getLogger(DEMO_LOGGER)
    logger.addHandler(handler)
    yield logger, stream
    logger.removeHandler(handler)


def test_the_session_urls_carry_passwords(settings) -> None:
    assert DATABASE_PASSWORD in settings.database_url and REDIS_PASSWORD in settings.redis_url


def test_configured_secrets_cover_tokens_key_and_url_passwords() -> None:
    configured = configured_secrets()
    tokens = (API_TOKEN, SECOND_API_TOKEN, WEBHOOK_TOKEN, METRICS_TOKEN, AT_API_KEY)
    for secret in (*tokens, DATABASE_PASSWORD, REDIS_PASSWORD):
        assert secret in configured
    # The session-wide watcher formats records as production would, with the same secrets.
    assert set(production_secrets()) == {secret for secret in configured if secret}


def test_urls_with_passwords_and_tokens_are_redacted(demo_log, settings) -> None:
    logger, stream = demo_log
    logger.error("cannot reach the database at %s", settings.database_url)
    logger.error("broker %s is down", settings.redis_url)
    logger.warning("a URL no setting names: postgresql://reach:%s@db.example:5432/reach", DEMO_PASSWORD)
    logger.warning("callback to https://reach.example/dlr?token=%s&x=1", WEBHOOK_TOKEN)
    logger.info("operator used %s; AT key %s", SECOND_API_TOKEN, AT_API_KEY)
    try:
        raise ConnectionError(f"Error connecting to redis://:{REDIS_PASSWORD}@10.0.0.9:6379/0")
    except ConnectionError:
        logger.exception("drain failed")
    output = stream.getvalue()
    assert len(output.splitlines()) > 6 and "Traceback" in output
    for name, secret in secrets().items():
        assert secret not in output, f"{name} was logged"
    assert "postgresql://reach:***@db.example" in output and "?token=***&x=1" in output
    assert "redis://:***@127.0.0.1" in output and "drain failed" in output


def test_the_run_wide_check_catches_a_leak() -> None:
    """The watcher itself (a fresh one, not the session's): it must see what it is there to see."""
    known = {"API_TOKEN": API_TOKEN, "demo URL password": DEMO_PASSWORD, "unconfigured": "sk_not-in-settings-1"}
    watcher = LeakWatcher(known, configured=[API_TOKEN])
    logger = logging.getLogger("tests.leak_check_probe")
    logger.propagate = False  # only the probe watcher sees these records, never the session's
    logger.addHandler(watcher)
    try:
        logger.warning("nothing to see")
        assert watcher.leaks == []
        logger.warning("token is %s", API_TOKEN)
        assert any("logged API_TOKEN" in leak for leak in watcher.leaks)
        assert not any("survived" in leak for leak in watcher.leaks)  # production's formatter hid it
        logger.warning("key sk_not-in-settings-1")
        assert any("unconfigured survived" in leak for leak in watcher.leaks)
    finally:
        logger.removeHandler(watcher)
    # Outside the run's temporary directory, which the session check reads at the end.
    with tempfile.TemporaryDirectory() as name:
        logs = Path(name)
        (logs / "sub").mkdir()
        (logs / "sub" / "worker.log").write_text(f"ok\nconnecting to redis://:{DEMO_PASSWORD}@host\n")
        (logs / "clean.log").write_text("nothing\n")
        assert subprocess_log_leaks(logs, known) == ["sub/worker.log: demo URL password"]


@pytest.mark.parametrize(
    "message",
    [
        '127.0.0.1 "POST /dlr" 200 47 3ms',
        f"connecting to redis://:{REDIS_PASSWORD}@cache:6379/0 and postgresql://reach:pw1234@db/reach",
        f"GET /dlr?id=1&token={WEBHOOK_TOKEN}&apiKey=abcd1234 from 10.0.0.1",
        f"{AT_API_KEY} then {WEBHOOK_TOKEN[:10]} and {API_TOKEN}",
    ],
)
def test_reachs_formatter_writes_what_logging_and_redact_would(message: str) -> None:
    """The redacting formatter's shortcuts (its secrets sorted once, the patterns tried only where their
    punctuation is, the time formatted once a second) change no line."""
    from shared.logs import LOG_FORMAT, RedactingFormatter, redact

    secrets = configured_secrets()
    formatter = RedactingFormatter(LOG_FORMAT, secrets)
    plain = logging.Formatter(LOG_FORMAT)
    for created in (1_700_000_000.25, 1_700_000_000.999, 1_700_000_001.0, 1_700_000_061.5):
        record = logging.LogRecord("web.access", logging.INFO, __file__, 1, message, None, None)
        record.created, record.msecs = created, (created - int(created)) * 1000
        expected = redact(plain.format(record), [s for s in secrets if len(s) >= 4])
        assert formatter.format(record) == expected
