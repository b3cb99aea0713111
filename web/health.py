"""Liveness and readiness probes."""

from __future__ import annotations

import logging

from flask import Blueprint
from flask.typing import ResponseReturnValue
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from shared import dlr_silence, incidents
from shared.store import STORE_ERRORS
from web.services import services

log = logging.getLogger(__name__)
bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz() -> ResponseReturnValue:
    """The process answers."""
    return {"status": "ok"}


@bp.get("/readyz")
def readyz() -> ResponseReturnValue:
    """Ready when both the database and the broker answer; 503 naming what is down otherwise."""
    checks = {"database": _database_ok(), "broker": _broker_ok()}
    ready = all(checks.values())
    body = {"status": "ready" if ready else "not ready", **{k: "ok" if v else "down" for k, v in checks.items()}}
    if ready:
        body["inbox_depth"] = services().inbox.depth()
        body["warnings"] = _warnings()
    return body, 200 if ready else 503


def _warnings() -> list[str]:
    """What an operator must fix that is no reason to take this receiver out of the load balancer: a
    delivery-report silence means AT cannot reach /dlr, and a receiver taken out would hear even less; a
    carrier incident holds a network's contacts until it ends."""
    try:
        with services().sessions() as session:
            silent = dlr_silence.silent_cycles(session)
            held = [i for i in incidents.holding(session) if i.ended_at is None]
    except SQLAlchemyError as exc:
        log.warning("readiness: warnings not read: %s", exc.__class__.__name__)
        return []
    found = [f"dlr_silence: {dlr_silence.describe(silent)}"] if silent else []
    return found + [f"network_incident: {incidents.describe(i, services().settings)}" for i in held]


def _database_ok() -> bool:
    try:
        with services().engine.connect() as connection:
            connection.execute(text("SELECT 1"))
        return True
    except SQLAlchemyError as exc:
        log.warning("readiness: database down: %s", exc.__class__.__name__)
        return False


def _broker_ok() -> bool:
    try:
        return services().store.ping()
    except STORE_ERRORS as exc:
        log.warning("readiness: broker down: %s", exc.__class__.__name__)
        return False
