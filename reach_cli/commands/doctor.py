"""`reach doctor`: is this installation able to do its job? One line per check, OK, WARN or FAIL."""

from __future__ import annotations

import sys

import click

from reach_cli.common import EXIT_FAILED, echo, echo_json


@click.command("doctor")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def doctor(as_json: bool) -> None:
    """Check settings, database, broker, worker, AT credentials and balance, callback URLs, delivery-report
    silence and parked callbacks. Exit 0 when nothing FAILs, 1 otherwise."""
    from reach_cli.doctor import FAIL, run_checks

    checks = run_checks()
    failed = any(c.level == FAIL for c in checks)
    if as_json:
        echo_json({"ok": not failed, "checks": [c.as_dict() for c in checks]})
    else:
        for check in checks:
            echo(f"{check.level:<4}  {check.name:<16} {check.detail}")
    sys.exit(EXIT_FAILED if failed else 0)
