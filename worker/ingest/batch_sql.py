"""Helpers for the batch statements: Postgres gets one array per column over unnest(), SQLite executemany."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import psycopg
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

#: Batch writes on Postgres pass one array per column to a short, fixed statement over unnest(): psycopg then
#: caches and prepares it, where a multi-row VALUES of ~3,500 placeholders per batch was re-parsed by psycopg
#: every time (a fifth of the drain's CPU, py-spy in bench/RESULTS.md "DLR apply"); the drain's own rows go in
#: by COPY (worker/ingest/staging.py). SQLite (embedded mode) passes the rows as executemany parameters to one
#: cached `insert(table)` or `update(table)` on the Core table.


def is_postgres(session: Session) -> bool:
    return session.get_bind().dialect.name == "postgresql"


def as_columns(rows: list[dict[str, object]], prefix: str = "") -> dict[str, list[object]]:
    """Rows of parameters as one array per column (for the unnest statements)."""
    return {key: [row[key] for row in rows] for key in rows[0] if key.startswith(prefix)}


#: The drain's Postgres statements run on the driver's own cursor, with `%(name)b` placeholders: psycopg dumps
#: an array parameter element by element in Python, and in its text format it also quotes and escapes each
#: one; in binary that is a quarter of the CPU (500 rows of 8 columns: 4.5 ms against 1.1 ms a batch).


def driver_cursor(session: Session) -> psycopg.Cursor[Any]:
    """A psycopg cursor on the session's connection, in its transaction."""
    return session.connection().connection.driver_connection.cursor()  # type: ignore[union-attr, no-any-return]


@contextmanager
def driver_errors(statement: str) -> Iterator[None]:
    """psycopg's errors raised as SQLAlchemy raises them (DataError, IntegrityError, OperationalError, ...): the
    drain tells a callback's own data error (parked) from the environment's (the batch goes back) by them."""
    try:
        yield
    except psycopg.Error as exc:
        raise DBAPIError.instance(statement, None, exc, psycopg.Error) from exc


def fetch(session: Session, statement: str, params: Mapping[str, Any]) -> list[tuple[Any, ...]]:
    """Run one statement on the driver's cursor; its rows (none for a statement that returns none)."""
    with driver_errors(statement), driver_cursor(session) as cursor:
        cursor.execute(statement, params)  # type: ignore[arg-type]
        return cursor.fetchall() if cursor.description else []
