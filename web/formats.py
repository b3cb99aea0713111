"""How the dashboard's pages write times, shares and networks: one place, registered as Jinja filters
(`when`, `pct`, `network`, `seconds`) by web/dashboard.py for every dashboard template."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from flask import Flask

from shared.networks import NAMES, network_name
from shared.report_delays import describe_seconds
from web.services import services

#: What a cell shows for a time that did not happen or a share of nothing.
NOTHING = "\N{EN DASH}"


def init_app(app: Flask) -> None:
    app.add_template_filter(local_time, "when")
    app.add_template_filter(percentage, "pct")
    app.add_template_filter(network, "network")
    app.add_template_filter(duration, "seconds")


def local_time(value: datetime | str | None, seconds: bool = False) -> str:
    """`2026-12-06 14:05 EAT`: a time in DASHBOARD_TIMEZONE, always with its zone's name."""
    if value is None:
        return NOTHING
    at = datetime.fromisoformat(value) if isinstance(value, str) else value
    if at.tzinfo is None:  # the database's times are UTC
        at = at.replace(tzinfo=UTC)
    shape = "%Y-%m-%d %H:%M:%S %Z" if seconds else "%Y-%m-%d %H:%M %Z"
    return at.astimezone(ZoneInfo(services().settings.dashboard_timezone)).strftime(shape)


def percentage(value: float | None) -> str:
    """`75.0%`, or a dash when there was nothing to be a share of."""
    return NOTHING if value is None else f"{value:.1f}%"


def network(code: str | None) -> str:
    """`Safaricom (63902)` where the code has a name, else what shared.networks makes of it; empty for none."""
    if not code:
        return ""
    return f"{NAMES[code]} ({code})" if code in NAMES else network_name(code)


def duration(seconds: float | None) -> str:
    """`95 s`, `2.1 s`, or a dash for no figure."""
    return NOTHING if seconds is None else describe_seconds(seconds)
