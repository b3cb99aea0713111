"""Turning a contact's history into lines an operator reads (`reach contacts show`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from reach_cli.cycles import table


def when(iso: str | None) -> str | None:
    """An ISO time as `YYYY-MM-DD HH:MM:SS` in UTC (the database's times are UTC)."""
    return datetime.fromisoformat(iso).strftime("%Y-%m-%d %H:%M:%S") if iso else None


def money(amount: str | None, currency: str | None) -> str | None:
    return f"{currency} {amount}" if amount is not None and currency else amount


def history_lines(messages: Sequence[Mapping[str, Any]], calls: Sequence[Mapping[str, Any]]) -> list[str]:
    """Two tables, newest first: each SMS with its delivery status and failure reason, each call with its
    outcome and hang-up cause; with times (UTC) and what AT charged."""
    lines = ["", f"SMS ({len(messages)} latest, newest first; times UTC)"]
    if messages:
        rows = [
            (
                when(m["created_at"]), m["cycle_id"], m["send_state"], m["status"], m["failure_reason"],
                when(m.get("status_at")), money(m.get("cost"), m.get("currency")),
            )
            for m in messages
        ]  # fmt: skip
        headers = ("sent", "cycle", "send", "status", "failure reason", "status at", "cost")
        lines += ["  " + line for line in table(headers, rows)]
    else:
        lines.append("  none")
    lines += ["", f"Calls ({len(calls)} latest, newest first; times UTC)"]
    if calls:
        rows = [
            (
                when(c["created_at"]), c["cycle_id"], c["status"], c["outcome"], c["hangup_cause"],
                "yes" if c["acknowledged"] else "no", c["duration_seconds"], when(c.get("ended_at")),
                money(c.get("amount"), c.get("currency")),
            )
            for c in calls
        ]  # fmt: skip
        headers = ("placed", "cycle", "status", "outcome", "hang-up cause", "pressed 1", "seconds", "ended", "cost")
        lines += ["  " + line for line in table(headers, rows)]
    else:
        lines.append("  none")
    return lines
