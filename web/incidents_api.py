"""Carrier incidents for the operator (shared/incidents.py): `GET /api/incidents`, `POST /api/incidents/<id>/release`.

Routes of the operator API's blueprint (`web.operator_api.bp`: its bearer-token check and rate limit apply);
`web.create_app` imports this module before it registers the blueprint.
"""

from __future__ import annotations

from datetime import UTC, datetime

from flask.typing import ResponseReturnValue

from shared import incidents
from web.errors import ApiError
from web.operator_api import bp
from web.services import services

INCIDENT_ID = "<int(min=1, max=9223372036854775807):incident_id>"


@bp.get("/incidents")
def list_incidents() -> ResponseReturnValue:
    """The latest carrier incidents, newest first."""
    with services().sessions() as session:
        return {"incidents": [incidents.incident_json(session, i) for i in incidents.recent(session)]}


@bp.post(f"/incidents/{INCIDENT_ID}/release")
def release_incident(incident_id: int) -> ResponseReturnValue:
    """End an incident now: its held reports are applied by the next housekeeping; 200 with the incident."""
    with services().sessions() as session, session.begin():
        try:
            incident = incidents.release(session, incident_id, datetime.now(UTC))
        except incidents.IncidentNotFound as exc:
            raise ApiError(404, str(exc)) from None
        except incidents.IncidentConflict as exc:
            raise ApiError(409, str(exc)) from None
        session.flush()
        return incidents.incident_json(session, incident), 200
