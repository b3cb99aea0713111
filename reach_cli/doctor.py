"""`reach doctor`'s checks: each answers one line, OK, WARN or FAIL, and never raises.

They run in order and a FAIL of the settings stops the rest (nothing else can be read without them).
Secrets never appear: the webhook token is masked in the callback URL hint.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from shared.settings import VAR_DIR, Settings, SettingsError, get_settings

log = logging.getLogger(__name__)

OK, WARN, FAIL = "OK", "WARN", "FAIL"
#: Parked callbacks and alerts newer than this are "recent".
RECENT = timedelta(days=1)


@dataclass(frozen=True)
class Check:
    name: str
    level: str
    detail: str

    def as_dict(self) -> dict[str, str]:
        return asdict(self)


def run_checks() -> list[Check]:
    """Every check, in order; the settings first (a FAIL there ends the run)."""
    try:
        settings = get_settings()
    except SettingsError as exc:
        return [Check("settings", FAIL, str(exc).splitlines()[0])]
    results = [Check("settings", OK, "loaded and valid")]
    for check in CHECKS:
        if check in NEED_SCHEMA and any(r.name == "database" and r.level == FAIL for r in results):
            results.append(Check(_name(check), WARN, "not checked: the database is not ready"))
            continue
        results.extend(_guarded(check, settings))
    return results


def _name(check: Callable[[Settings], Iterator[Check]]) -> str:
    return check.__name__.removeprefix("check_")


def _guarded(check: Callable[[Settings], Iterator[Check]], settings: Settings) -> list[Check]:
    name = _name(check)
    try:
        return list(check(settings))
    except Exception as exc:  # a check that breaks is itself a finding, not a traceback
        return [Check(name, FAIL, f"{exc.__class__.__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")]


def check_database(settings: Settings) -> Iterator[Check]:
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory

    from shared.db import get_engine
    from shared.migrate import alembic_config

    heads = set(ScriptDirectory.from_config(alembic_config()).get_heads())
    with get_engine().connect() as connection:
        current = set(MigrationContext.configure(connection).get_current_heads())
    if current == heads:
        yield Check("database", OK, f"reachable, migrated to head ({', '.join(sorted(heads))})")
    else:
        found = ", ".join(sorted(current)) or "no schema"
        yield Check("database", FAIL, f"reachable but at {found}, not head: run reach db upgrade")


def check_broker(settings: Settings) -> Iterator[Check]:
    from shared.store import get_store

    if get_store().ping():
        yield Check("broker", OK, "Redis reachable" if settings.uses_redis else "embedded broker reachable")
    else:
        yield Check("broker", FAIL, "unreachable")


def check_worker(settings: Settings) -> Iterator[Check]:
    if not settings.uses_redis:
        yield Check("worker", WARN, "not asked (embedded broker): reach up runs one")
        return
    from worker.celery import app

    replies = app.control.ping(timeout=1.0)
    if replies:
        yield Check("worker", OK, f"{len(replies)} worker(s) answered")
    else:
        yield Check("worker", FAIL, "no worker answered within 1 s: nothing will send (celery -A worker worker)")


def check_at(settings: Settings) -> Iterator[Check]:
    from shared.at_account import fetch_balance
    from shared.at_client import AtError, AtRejected

    if not settings.uses_real_at:
        yield Check("at_credentials", WARN, "AT_USERNAME / AT_API_KEY unset: Reach talks to its simulator")
        return
    try:
        balance = fetch_balance(settings)
    except AtRejected as exc:
        yield Check("at_credentials", FAIL, f"{exc} (account {settings.at_username})")
        return
    except AtError as exc:
        yield Check("at_credentials", WARN, f"not checked: {exc}")
        return
    yield Check("at_credentials", OK, f"accepted by AT (account {settings.at_username})")
    yield Check("balance", OK, balance)


def check_callbacks(settings: Settings, var_dir: Path = VAR_DIR) -> Iterator[Check]:
    token, source = settings.webhook_token.get_secret_value(), ""
    generated = var_dir / "webhook-token.secret"
    if not token and generated.is_file():
        # `reach up` generates it there and hands it to its children only (reach_cli/up.py).
        token, source = generated.read_text().strip(), " (the token reach up generated: var/webhook-token.secret)"
    masked = f"{token[:2]}...{token[-2:]}" if len(token) >= 8 else "..."
    query = f"?token={masked}" if token else ""
    hint = f"set AT's delivery report URL to https://your.host/dlr{query} (and /voice, /receiveSMS alike)"
    if token:
        yield Check("callback_urls", OK, hint + source)
    else:
        yield Check("callback_urls", WARN, f"WEBHOOK_TOKEN unset: anyone can post callbacks; {hint}")


def check_dlr_silence(settings: Settings) -> Iterator[Check]:
    from shared import dlr_silence
    from shared.db import session_scope

    with session_scope() as session:
        silent = dlr_silence.silent_cycles(session)
    if silent:
        yield Check("dlr_silence", WARN, dlr_silence.describe(silent))
    else:
        yield Check("dlr_silence", OK, "no cycle is waiting on delivery reports that never came")


def check_parked_callbacks(settings: Settings) -> Iterator[Check]:
    from shared.store import get_store

    since = datetime.now(UTC) - RECENT
    parked = get_store().inbox().dead_letters()
    recent = [p for p in parked if p.parked_at is None or p.parked_at >= since]
    if recent:
        yield Check("parked_callbacks", WARN, f"{len(recent)} in the last day ({len(parked)} in all): reach inbox")
    else:
        yield Check("parked_callbacks", OK, f"none in the last day ({len(parked)} in all)")


def check_fallback_wait(settings: Settings) -> Iterator[Check]:
    """What a `same_cycle` fallback waits, and each network's learned report delays (shared/report_delays.py)."""
    from shared import report_delays
    from shared.db import session_scope

    with session_scope() as session:
        waits = report_delays.Waits.load(session, settings)
    seconds = report_delays.describe_seconds
    learned = "; ".join(
        f"{r['network']}: {r['samples']} samples, P50 {seconds(r['p50'])}, P95 {seconds(r['p95'])}, "
        f"wait {r['wait']} s ({r['basis']})"
        for r in waits.table()
    )
    if settings.fallback_after_seconds == "auto":
        bounds = f"{settings.fallback_after_min_seconds}-{settings.fallback_after_max_seconds} s"
        mode = f"FALLBACK_AFTER_SECONDS=auto within {bounds}"
    else:
        mode = f"FALLBACK_AFTER_SECONDS={settings.fallback_after_seconds}"
    yield Check("fallback_wait", OK, f"{mode}; {learned or 'no final delivery report in the last day yet'}")


def check_incidents(settings: Settings) -> Iterator[Check]:
    """A carrier incident holds its network's downgrades and calls until it recovers or is released."""
    from shared import incidents
    from shared.db import session_scope

    with session_scope() as session:
        held = [i for i in incidents.holding(session) if i.ended_at is None]
        lines = [incidents.describe(incident, settings) for incident in held]
    if lines:
        yield Check("incidents", WARN, "; ".join(lines))
    else:
        yield Check("incidents", OK, "no network incident holds contacts")


CHECKS = (
    check_database,
    check_broker,
    check_worker,
    check_at,
    check_callbacks,
    check_dlr_silence,
    check_parked_callbacks,
    check_fallback_wait,
    check_incidents,
)
#: Checks that read Reach's tables: pointless (and noisy) when the database check failed.
NEED_SCHEMA = (check_dlr_silence, check_parked_callbacks, check_fallback_wait, check_incidents)
