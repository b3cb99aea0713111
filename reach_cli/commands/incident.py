"""`reach incident`: carrier incidents (shared/incidents.py): a network failing far above its baseline."""

from __future__ import annotations

from datetime import UTC, datetime

import click

from reach_cli.common import EXIT_NOT_FOUND, echo, echo_json, fail, session_or_exit, settings_or_exit


@click.group()
def incident() -> None:
    """Carrier incidents: a network whose delivery reports fail far above its baseline. While one holds, its
    contacts are not marked inactive nor called; it ends when the network recovers, or on `release`."""


@incident.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def incident_list(as_json: bool) -> None:
    """The latest incidents, newest first, with how many contacts each holds."""
    from reach_cli.cycles import table
    from shared import incidents

    settings_or_exit()
    with session_or_exit() as session:
        found = [incidents.incident_json(session, i) for i in incidents.recent(session)]
    if as_json:
        echo_json({"incidents": found})
        return
    if not found:
        echo("no carrier incidents")
        return
    columns = ("id", "network", "state", "failure_rate", "baseline_rate", "held_contacts", "opened_at", "ended_at")
    shown = (
        {**i, "failure_rate": f"{i['failure_rate']:.0%}", "baseline_rate": f"{i['baseline_rate']:.0%}"} for i in found
    )
    for line in table(columns, ([i[k] for k in columns] for i in shown)):
        echo(line)


@incident.command("release")
@click.argument("incident_id", type=int, metavar="ID")
def incident_release(incident_id: int) -> None:
    """End incident ID now: the reports it held are applied (contacts marked inactive, their calls allowed) by
    the next housekeeping."""
    from shared import incidents

    settings_or_exit()
    with session_or_exit() as session:
        try:
            released = incidents.release(session, incident_id, datetime.now(UTC))
        except incidents.IncidentNotFound as exc:
            fail(str(exc), EXIT_NOT_FOUND)
        except incidents.IncidentConflict as exc:
            fail(str(exc))
        network = incidents.incident_json(session, released)["network"]
    echo(f"incident {incident_id} ({network}) released: its held reports are applied by the next housekeeping")
