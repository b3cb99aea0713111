"""`reach simulator`: the Africa's Talking simulator."""

from __future__ import annotations

from pathlib import Path

import click

from reach_cli.common import (
    EXIT_USAGE,
    echo,
    fail,
    settings_or_exit,
)


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8001, show_default=True, type=int)
@click.option("--scenario", "scenario_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--callback-url", default=None, help="Where to post callbacks (default: http://HOST:PORT of Reach).")
@click.option(
    "--api-key",
    envvar="AT_API_KEY",
    default="simulator-key",
    show_default=True,
    help="Key clients must send; prefer AT_API_KEY in the environment (a command line shows in ps).",
)
@click.option("--username", envvar="AT_USERNAME", default="sandbox", show_default=True)
# `reach up` binds the port itself and hands the listening socket down, so nothing can take the port between
# its check and the child's start.
@click.option("--fd", type=int, default=None, hidden=True, help="Serve on this inherited listening socket.")
def simulator(
    host: str,
    port: int,
    scenario_file: Path | None,
    callback_url: str | None,
    api_key: str,
    username: str,
    fd: int | None,
) -> None:
    """Run the Africa's Talking simulator: SMS and voice APIs on loopback, callbacks by scenario.

    A scenario is a JSON file saying what happens to each number: delivery reports in order, the call's
    outcome, delays, duplicates and faults (see simulator/scenario.py). Without one, every SMS is
    delivered and every call answered. Ctrl-C stops it.
    """
    from simulator.app import serve
    from simulator.scenario import Scenario

    settings = settings_or_exit()
    try:
        scenario = Scenario.from_file(scenario_file) if scenario_file else Scenario.from_dict({})
    except (ValueError, TypeError, AttributeError) as exc:  # json.JSONDecodeError is a ValueError
        fail(f"bad scenario {scenario_file}: {exc}", EXIT_USAGE)
    callback_url = callback_url or f"http://{settings.host}:{settings.port}"
    token = next(iter(settings.webhook_tokens), None)
    echo(f"AT simulator on http://{host}:{port} (SMS: /version1/messaging, voice: /call)")
    echo(f"posting callbacks to {callback_url}")
    try:
        serve(host, port, scenario, api_key, username, callback_url, token, fd=fd)
    except OSError as exc:
        fail(f"cannot listen on {host}:{port}: {exc.strerror or exc}")
