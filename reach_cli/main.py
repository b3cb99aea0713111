"""`reach`: the operator's command line.

Exit codes scripts can rely on (every error is one `error: ...` line on stderr, never a traceback):

    0  done
    1  the operation failed, or the cycle's state does not allow it (a cycle that is not paused cannot be
       resumed, a finished one cannot be paused or cancelled; `cycle watch`: it failed or was cancelled;
       `up`: its port is taken or another `reach up` holds var/)
    2  bad usage: an unknown option or value, bad settings, a bad phone number, scenario file or schedule,
       an empty or too long message
    3  a service Reach needs is unreachable (the database or the broker)
    4  not found: no such contact, cycle, schedule or incident
"""

from __future__ import annotations

import click

from reach_cli.commands import contacts, cycle, db, doctor, inbox, incident, run, schedule, simulator
from reach_cli.common import EXIT_CODES_HELP, EXIT_FAILED, EXIT_NOT_FOUND, EXIT_UNREACHABLE, EXIT_USAGE, ReachGroup

__all__ = ["EXIT_FAILED", "EXIT_NOT_FOUND", "EXIT_UNREACHABLE", "EXIT_USAGE", "cli", "main"]


@click.group(cls=ReachGroup, context_settings={"help_option_names": ["-h", "--help"]}, epilog=EXIT_CODES_HELP)
@click.version_option(package_name="reach", prog_name="reach", message="%(prog)s %(version)s")
def cli() -> None:
    """Reach: SMS to your customers over Africa's Talking, with a voice call when the SMS did not arrive.

    Settings come from the environment and the project's .env file (see .env.example); the project, with
    its var/, is REACH_HOME when set, else the checkout `reach` runs from, wherever you run it.
    """


for command in (
    db.db,
    simulator.simulator,
    contacts.contacts,
    cycle.cycle,
    schedule.schedule,
    inbox.inbox,
    incident.incident,
    run.up,
    run.demo,
    doctor.doctor,
):
    cli.add_command(command)


def main() -> None:
    cli()


if __name__ == "__main__":
    main()
