"""`reach up` and `reach demo`: running everything on one machine."""

from __future__ import annotations

import click

from reach_cli.common import (
    settings_or_exit,
)


@click.command()
@click.option(
    "--demo", is_flag=True, help="Then run the demo: sample contacts, two cycles on the simulator, a summary."
)
def up(demo: bool) -> None:
    """Run everything here: receiver, worker and beat (and the AT simulator when AT is not configured).

    With no DATABASE_URL and no REDIS_URL everything is embedded in SQLite files under var/.
    """
    from reach_cli.up import run_up

    scenario = None
    if demo:
        from reach_cli.demo import data_file

        scenario = data_file("scenario.json")
    run_up(settings_or_exit(), demo=demo, demo_scenario=scenario)


@click.command()
def demo() -> None:
    """Run the demo against a `reach up` whose simulator plays the demo scenario (`reach up --demo` does it)."""
    from reach_cli.demo import run_demo

    run_demo(settings_or_exit())
