"""The one module that owns database connections, and the one place dialect differences live.

Callers own their sessions (`with session_scope() as session:`); data functions take the session first.
Worker processes call `dispose_after_fork()` so no pooled connection crosses a `fork()`.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import BigInteger, ColumnElement, Engine, any_, bindparam, create_engine, event, func
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from shared.settings import get_settings


def normalise_url(url: str) -> str:
    """Use psycopg 3 for plain `postgresql://` URLs (the form operators and Heroku-style hosts give)."""
    parsed = make_url(url)
    if parsed.drivername in {"postgresql", "postgres"}:
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed.render_as_string(hide_password=False)


#: How long a SQLite writer waits for another process's write (receiver, worker and beat share files).
SQLITE_BUSY_TIMEOUT_SECONDS = 30
#: The largest id a BIGINT key holds: a cursor or id from a request above it is refused before any query.
MAX_BIGINT = 2**63 - 1


def sqlite_connect_args() -> dict[str, Any]:
    return {"timeout": SQLITE_BUSY_TIMEOUT_SECONDS}


def prepare_sqlite(url: str) -> None:
    """Create a SQLite file's directory and switch it to WAL (kept in the file), so readers never wait for
    writers. For files other libraries open with their own engines (kombu's broker file)."""
    engine = build_engine(url.removeprefix("sqla+"))
    with engine.connect():
        pass
    engine.dispose()


def build_engine(url: str, **kwargs: Any) -> Engine:
    url = normalise_url(url)
    if url.startswith("sqlite"):
        database = make_url(url).database
        if database and database != ":memory:":
            Path(database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args=sqlite_connect_args(), **kwargs)
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    kwargs.setdefault("pool_pre_ping", True)
    kwargs.setdefault("pool_size", 5)
    kwargs.setdefault("max_overflow", 5)
    connect_args = {"connect_timeout": 5, "application_name": "reach"}
    return create_engine(url, connect_args=connect_args, **kwargs)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # A Postgres function SQLite lacks, with Postgres's meaning (shared/personal_parts.py counts with it).
    dbapi_connection.create_function("regexp_replace", 4, _regexp_replace, deterministic=True)
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_SECONDS * 1000}")
    cursor.close()


def _regexp_replace(text: str | None, pattern: str, replacement: str, flags: str) -> str | None:
    """Postgres `regexp_replace` for the patterns Reach uses (Python's `re` reads `\\U0001F600` alike); `g`: all."""
    if text is None:
        return None
    return re.sub(pattern, replacement, text, count=0 if "g" in flags else 1)


@functools.cache
def get_engine() -> Engine:
    return build_engine(get_settings().effective_database_url)


@functools.cache
def _session_factory() -> sessionmaker[Session]:
    return sessionmaker(get_engine(), expire_on_commit=False)


@contextmanager
def session_scope() -> Iterator[Session]:
    """A session whose transaction commits on success and rolls back on error."""
    with _session_factory()() as session, session.begin():
        yield session


def dispose_after_fork() -> None:
    """Drop connections inherited from a parent process without closing the parent's sockets."""
    if get_engine.cache_info().currsize:
        get_engine().dispose(close=False)


def insert_for(session: Session | Engine, table: Any) -> Any:
    """`INSERT` with `ON CONFLICT` support for whichever database the session talks to."""
    bind = session.get_bind() if isinstance(session, Session) else session
    if bind.dialect.name == "sqlite":
        return sqlite.insert(table)
    return postgresql.insert(table)


def greatest(session: Session, *values: Any) -> Any:
    """SQL `GREATEST` (Postgres) or multi-argument `MAX` (SQLite)."""
    return func.max(*values) if session.get_bind().dialect.name == "sqlite" else func.greatest(*values)


def ids_in(session: Session, column: Any, ids: Collection[int]) -> ColumnElement[bool]:
    """`column IN (ids)`. On Postgres as `= ANY(one array)`: the statement's text is the same for any number of
    ids, so psycopg caches and prepares it, where `IN` renders a placeholder per id and is parsed and planned
    again every time (the drain passes hundreds of ids a batch). SQLite keeps `IN`."""
    if not is_postgres(session):
        return column.in_(ids)
    return column == any_(bindparam(None, list(ids), type_=postgresql.ARRAY(BigInteger)))


def is_postgres(session: Session) -> bool:
    return session.get_bind().dialect.name == "postgresql"
