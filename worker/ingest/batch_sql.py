"""Helpers for the batch statements: Postgres gets one array per column over unnest(), SQLite executemany."""

from __future__ import annotations

from sqlalchemy.orm import Session

#: Batch writes on Postgres pass one array per column to a short, fixed statement over unnest(): psycopg then
#: caches and prepares it, where a multi-row VALUES of ~3,500 placeholders per batch was re-parsed by psycopg
#: every time (a fifth of the drain's CPU, py-spy in bench/RESULTS.md "DLR apply"). SQLite (embedded mode)
#: passes the rows as executemany parameters to one cached `insert(table)` on the Core table, which SQLAlchemy
#: pages as multi-row VALUES (insertmanyvalues) with RETURNING.


def is_postgres(session: Session) -> bool:
    return session.get_bind().dialect.name == "postgresql"


def as_columns(rows: list[dict[str, object]], prefix: str = "") -> dict[str, list[object]]:
    """Rows of parameters as one array per column (for the unnest statements)."""
    return {key: [row[key] for row in rows] for key in rows[0] if key.startswith(prefix)}
