"""`reach inbox`: callbacks the drain parked (a data error of their own), listed and put back after a fix.

A parked callback was answered 200 and is kept whole: `dead` shows it as queued (phone numbers as stored),
`replay` queues it again under its own inbox id, so one that was applied already is not applied twice.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import click

from reach_cli.common import EXIT_UNREACHABLE, EXIT_USAGE, echo, echo_json, fail, settings_or_exit
from shared.inbox import DeadLetter
from shared.store import STORE_ERRORS, CallbackInbox


@contextmanager
def inbox_or_exit() -> Iterator[CallbackInbox]:
    """The inbox of the configured store (Redis, or the database in the embedded mode); exit 3 if down."""
    from shared.store import store_for

    store = store_for(settings_or_exit())
    try:
        yield store.inbox()
    except STORE_ERRORS as exc:
        fail(f"{store.name} unreachable: {exc.__class__.__name__}", EXIT_UNREACHABLE)
    finally:
        store.close()


def dead_json(dead: DeadLetter) -> dict[str, Any]:
    item = dead.item
    parked_at = dead.parked_at.isoformat() if dead.parked_at else None
    return {
        "id": item.id,
        "kind": item.kind,
        "reason": dead.reason,
        "received_at": item.received_at.isoformat(),
        "parked_at": parked_at,
        "data": item.data,
    }


def dead_lines(dead: DeadLetter) -> list[str]:
    item = dead.item
    parked = dead.parked_at.strftime("%Y-%m-%d %H:%M:%S") if dead.parked_at else "-"
    fields = " ".join(f"{key}={value}" for key, value in item.data.items())
    return [
        f"{item.id}  {item.kind}  received {item.received_at.strftime('%Y-%m-%d %H:%M:%S')}  parked {parked}",
        f"    reason: {dead.reason or '-'}",
        f"    fields: {fields}",
    ]


@click.group()
def inbox() -> None:
    """Callbacks the drain could not apply: list them, put them back."""


@inbox.command("dead")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of lines.")
def inbox_dead(as_json: bool) -> None:
    """List parked callbacks: id, kind, reason, when received and parked, and their fields."""
    with inbox_or_exit() as box:
        parked = box.dead_letters()
    if as_json:
        echo_json([dead_json(dead) for dead in parked])
        return
    for dead in parked:
        for line in dead_lines(dead):
            echo(line)
    echo(f"{len(parked)} parked callback{'s' if len(parked) != 1 else ''}")


@inbox.command("replay", options_metavar="(--id ID ... | --all)")
@click.option("--id", "ids", multiple=True, help="The inbox id of a parked callback (repeat for more).")
@click.option("--all", "replay_all", is_flag=True, help="Every parked callback.")
def inbox_replay(ids: tuple[str, ...], replay_all: bool) -> None:
    """Put parked callbacks back on the inbox; each is applied once, whatever was applied before."""
    if bool(ids) == replay_all:
        fail("give either --id ID (one or more) or --all", EXIT_USAGE)
    with inbox_or_exit() as box:
        replayed = box.replay(None if replay_all else ids)
    missing = "" if replay_all or replayed == len(set(ids)) else f" ({len(set(ids)) - replayed} not parked)"
    echo(f"{replayed} callback{'s' if replayed != 1 else ''} back on the inbox{missing}")
