"""No secret in any log output of the whole test run; the run fails at the end if one appears.

Two places are watched:
- every log record of the test process (receiver, simulator, in-process worker code), through a handler on
  the root logger for the whole session. A record fails the run if its text holds a secret (code must not
  log one, even though production's formatter would hide it), or if production's formatter
  (`shared.logs.RedactingFormatter`, as `configure_logging` sets it up) lets one through;
- every `*.log` file under the run's temporary directory: the worker subprocesses' output
  (`tests.services.WorkerProcess`), whole stacks' workers (`tests.stack`), anything else a test starts.

Records of `DEMO_LOGGER` may hold a secret on purpose (`test_log_secrets.py` shows the redaction at work);
their formatted output is still checked.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from shared.logs import LOG_FORMAT, RedactingFormatter

DEMO_LOGGER = "tests.redaction_demo"
#: A password that only the redaction demo uses, in a URL that production code could log.
DEMO_PASSWORD = "demo-url-password-61c2f0"


def secrets() -> dict[str, str]:
    from tests import conftest
    from tests.sim_fixtures import SIM_KEY

    return {
        "API_TOKEN": conftest.API_TOKEN,
        "API_TOKEN (second)": conftest.SECOND_API_TOKEN,
        "WEBHOOK_TOKEN": conftest.WEBHOOK_TOKEN,
        "METRICS_TOKEN": conftest.METRICS_TOKEN,
        "AT_API_KEY": conftest.AT_API_KEY,
        "AT_API_KEY (simulator tests)": SIM_KEY,
        "DATABASE_URL password": conftest.DATABASE_PASSWORD,
        "REDIS_URL password": conftest.REDIS_PASSWORD,
        "demo URL password": DEMO_PASSWORD,
    }


def production_secrets() -> list[str]:
    """What `shared.logs.configured_secrets()` returns once the session's settings are in place (they are
    set later, by the `environment` fixture); test_log_secrets.py checks that the two agree."""
    from tests import conftest

    tokens = [
        conftest.AT_API_KEY,
        conftest.WEBHOOK_TOKEN,
        conftest.METRICS_TOKEN,
        conftest.API_TOKEN,
        conftest.SECOND_API_TOKEN,
    ]
    return [*tokens, conftest.DATABASE_PASSWORD, conftest.REDIS_PASSWORD]


def find_secrets(text: str, known: dict[str, str]) -> list[str]:
    return [name for name, value in known.items() if value and value in text]


class LeakWatcher(logging.Handler):
    """Looks at every record as it is emitted; keeps only a description of the ones that leak."""

    def __init__(self, known: dict[str, str], configured: list[str]) -> None:
        super().__init__(logging.DEBUG)
        self.known = known
        #: What production's formatter would be given (`shared.logs.configured_secrets`).
        self.production = RedactingFormatter(LOG_FORMAT, configured)
        self.leaks: list[str] = []
        self.records = 0

    def emit(self, record: logging.LogRecord) -> None:
        self.records += 1
        try:
            formatted = self.production.format(record)
            unredacted = _unredacted(record)
        except Exception as exc:  # a bad record must not hide the others
            self.leaks.append(f"{record.name}: could not format a record ({exc!r})")
            return
        for name in find_secrets(formatted, self.known):
            self.leaks.append(f"{record.name} ({record.levelname}): {name} survived the redacting formatter")
        if record.name != DEMO_LOGGER and not record.name.startswith(DEMO_LOGGER + "."):
            for name in find_secrets(unredacted, self.known):
                self.leaks.append(f"{record.name} ({record.levelname}): logged {name} (message: {record.msg!r:.80})")


def _unredacted(record: logging.LogRecord) -> str:
    text = record.getMessage()
    if record.exc_info:
        text += "\n" + logging.Formatter().formatException(record.exc_info)
    return text


_WATCHER_KEY = pytest.StashKey[LeakWatcher]()


def pytest_configure(config: pytest.Config) -> None:
    watcher = LeakWatcher(secrets(), production_secrets())
    config.stash[_WATCHER_KEY] = watcher
    root = logging.getLogger()
    root.addHandler(watcher)
    # Production logs at INFO (LOG_LEVEL); below that level nothing would even be recorded to look at.
    if root.level > logging.INFO or root.level == logging.NOTSET:
        root.setLevel(logging.INFO)


def subprocess_log_leaks(directory: Path, known: dict[str, str]) -> list[str]:
    leaks = []
    for path in sorted(directory.rglob("*.log")):
        text = path.read_text(errors="replace")
        leaks += [f"{path.relative_to(directory)}: {name}" for name in find_secrets(text, known)]
    return leaks


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    watcher = session.config.stash.get(_WATCHER_KEY, None)
    if watcher is None:
        return
    logging.getLogger().removeHandler(watcher)
    leaks = list(watcher.leaks)
    factory = getattr(session.config, "_tmp_path_factory", None)
    if factory is not None and factory._basetemp is not None:
        leaks += subprocess_log_leaks(factory.getbasetemp(), watcher.known)
    if not leaks:
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    lines = ["SECRETS IN LOG OUTPUT (the run fails):", *(f"  {leak}" for leak in dict.fromkeys(leaks))]
    if reporter is not None:
        reporter.ensure_newline()
        reporter.write_line("\n".join(lines), red=True)
    else:
        print("\n".join(lines))
    session.exitstatus = pytest.ExitCode.TESTS_FAILED
