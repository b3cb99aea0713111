"""Settings of the guards that keep a fault outside Reach from turning into calls: a delivery-report silence
(shared/dlr_silence.py) and a carrier incident (shared/incidents.py). `shared.settings.Settings` inherits
them, so they are read, validated and named in errors like every other setting."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings


class GuardSettings(BaseSettings):
    #: A cycle whose SMS got no delivery report at all this long after AT accepted them is "silent": the DLR
    #: URL is unset or its token wrong. It raises an alert, and the next cycle holds its contacts back instead
    #: of calling them all (shared/dlr_silence.py). AT usually reports within minutes; 30 minutes is safe.
    dlr_silence_seconds: int = Field(default=1800, ge=1, le=7 * 86_400)
    #: A network (the reports' `networkCode`) is in an incident when, in the last INCIDENT_WINDOW_SECONDS, it
    #: reported at least this many final failures, at a failure rate of at least 50 % and at least
    #: INCIDENT_RATE_FACTOR times its rate over the day before (shared/incidents.py). 0 turns the guard off.
    incident_min_failures: int = Field(default=50, ge=0, le=1_000_000)
    incident_rate_factor: float = Field(default=3.0, ge=1, le=1000)
    incident_window_seconds: int = Field(default=600, ge=60, le=86_400)
    #: An incident ends by itself once its network's failure rate has stayed within 10 points of its baseline
    #: this long (each look over the last INCIDENT_WINDOW_SECONDS).
    incident_recovery_seconds: int = Field(default=900, ge=0, le=7 * 86_400)
