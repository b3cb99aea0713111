"""The seed prototype's design for `POST /dlr`, on Reach's schema: the baseline of `bench.e2e`.

The seed (ATDevOutreach/VoiceForSMSFailureFallback, /work/shared/at-api.md §10) answered each delivery report
inside the request: it stored the report (`dlrs`), ran `UPDATE contacts SET status=... WHERE phonenumber=...`
and answered an empty 200. This is that design in Flask under `gunicorn -k sync -w 4`, against the same
tables and indexes Reach's worker writes, so "applied" means the same rows in both systems:

- INSERT the report into `dlr_events` (the seed's `dlrs`);
- UPDATE the message whose AT id it names (the seed had no message table; Reach's "applied" is this row);
- UPDATE the contact by its phone number, as the seed did (`Success` -> active, anything else -> inactive);
- one COMMIT, then 200: with `synchronous_commit=on` the answer means the change is on disk.

Generous to the seed where it cost nothing to be: one connection per worker process, kept open (Sequel's
pool), one transaction per report where the seed's autocommit made two; no token check (the seed had none).
"""

from __future__ import annotations

import os
from datetime import UTC, datetime
from typing import Any

import psycopg
from flask import Flask, request
from sqlalchemy.engine import make_url

INSERT_REPORT = """
    INSERT INTO dlr_events (at_message_id, status, failure_reason, phone, network_code, retry_count, received_at)
    VALUES (%(id)s, %(status)s, %(reason)s, %(phone)s, %(network)s, %(retry)s, %(at)s)
"""
UPDATE_MESSAGE = """
    UPDATE messages SET status = %(status)s, failure_reason = %(reason)s, network_code = %(network)s,
        status_at = %(at)s
    WHERE at_message_id = %(id)s
"""
UPDATE_CONTACT = """
    UPDATE contacts SET status = %(contact_status)s, last_sms_status = %(status)s, last_sms_at = %(at)s,
        updated_at = %(at)s
    WHERE phone = %(phone)s
"""

_connection: psycopg.Connection[Any] | None = None


def connection() -> psycopg.Connection[Any]:
    """This worker process's connection, opened at its first request (after gunicorn's fork)."""
    global _connection
    if _connection is None or _connection.closed:
        url = make_url(os.environ["DATABASE_URL"]).set(drivername="postgresql")
        _connection = psycopg.connect(url.render_as_string(hide_password=False), autocommit=True)
    return _connection


def create_app() -> Flask:
    app = Flask(__name__)

    @app.get("/healthz")
    def healthz() -> str:
        return "ok"

    @app.post("/dlr")
    def dlr() -> tuple[str, int]:
        form = request.form
        status = form.get("status", "")
        params = {
            "id": form.get("id", ""),
            "status": status,
            "reason": form.get("failureReason") or None,
            "phone": form.get("phoneNumber", ""),
            "network": form.get("networkCode") or None,
            "retry": int(form.get("retryCount") or 0),
            "at": datetime.now(UTC),
            "contact_status": "active" if status == "Success" else "inactive",
        }
        db = connection()
        with db.transaction(), db.cursor() as cursor:
            cursor.execute(INSERT_REPORT, params)
            cursor.execute(UPDATE_MESSAGE, params)
            cursor.execute(UPDATE_CONTACT, params)
        return "", 200

    return app


app = create_app()
