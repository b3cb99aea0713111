"""How an import's batches are written: the contacts upsert, and the numbers seen in earlier batches.

On Postgres each is one short statement over unnest() of one array per column, whatever the batch size
(psycopg's executemany sent a statement per row, pipelined); on SQLite (embedded mode, in-process) the rows
go as executemany parameters to one cached Core statement.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sqlalchemy import BigInteger, String, column, delete, func, insert, select, table, text
from sqlalchemy.orm import Session

from shared import erasure
from shared.db import insert_for, is_postgres
from shared.models import Contact, ContactStatus

if TYPE_CHECKING:
    from shared.imports import ContactRow

#: New numbers get status `new`; known ones keep theirs and get the new name (a missing name keeps the old one).
#: Tags travel as one `;`-joined string per row (a tag cannot hold `;`, shared.tags), NULL for none, because
#: unnest() of a two-dimensional array would flatten it.
#: `xmax = 0` is true for a row this statement inserted, false for one it updated.
UPSERT_CONTACTS = text(
    """
    INSERT INTO contacts (phone, name, tags, status, created_at, updated_at)
    SELECT phone, name, string_to_array(tags, ';'), :status, now(), now()
    FROM unnest(CAST(:phones AS text[]), CAST(:names AS text[]), CAST(:tags AS text[])) AS t(phone, name, tags)
    ON CONFLICT (phone) DO UPDATE SET
        name = coalesce(excluded.name, contacts.name), tags = coalesce(excluded.tags, contacts.tags), updated_at = now()
    RETURNING (xmax = 0)
    """
)
REMEMBER_SEEN = text(
    "INSERT INTO import_seen (phone, first_row) SELECT * FROM unnest(CAST(:phones AS text[]), CAST(:rows AS bigint[]))"
)
FIND_SEEN = text("SELECT phone, first_row FROM import_seen WHERE phone = ANY(CAST(:phones AS text[]))")


def upsert_contacts(session: Session, rows: list[ContactRow]) -> int:
    """Insert new numbers, update names of known ones; returns how many were new. A number erased before
    gets back the opt-out it had (shared.erasure)."""
    if not rows:
        return 0
    if is_postgres(session):
        params = {
            "status": ContactStatus.NEW.value,
            "phones": [r.phone for r in rows],
            "names": [r.name for r in rows],
            "tags": [";".join(r.tags) if r.tags else None for r in rows],
        }
        created = sum(session.scalars(UPSERT_CONTACTS, params))
        erasure.restore_consent(session, params["phones"])
        return created
    known = session.scalar(select(func.count()).select_from(Contact).where(Contact.phone.in_([r.phone for r in rows])))
    contacts = Contact.__table__
    stmt = insert_for(session, contacts)
    stmt = stmt.on_conflict_do_update(
        index_elements=["phone"],
        set_={
            "name": func.coalesce(stmt.excluded.name, contacts.c.name),
            "tags": func.coalesce(stmt.excluded.tags, contacts.c.tags),
            "updated_at": func.now(),
        },
    )
    values = [{"phone": r.phone, "name": r.name, "tags": r.tags, "status": ContactStatus.NEW} for r in rows]
    session.execute(stmt, values)
    erasure.restore_consent(session, [r.phone for r in rows])
    return len(rows) - (known or 0)


_SEEN = table("import_seen", column("phone", String), column("first_row", BigInteger))


class SeenPhones:
    """The numbers of an import's earlier batches, with the row each first appeared on, so that a repeat is
    found without a set of every number of the file in memory.

    They go to a temporary table (this connection's own: dropped at commit on Postgres, emptied by the next
    import on SQLite), one batch behind: an import of a single batch never creates it.
    """

    def __init__(self, session: Session) -> None:
        self._session = session
        self._postgres = is_postgres(session)
        self._pending: dict[str, int] = {}
        self._created = False

    def remember(self, first_rows: dict[str, int]) -> None:
        """The new numbers of the batch just written, with their rows."""
        self._store()
        self._pending = first_rows

    def first_rows(self, phones: list[str]) -> dict[str, int]:
        """Of `phones`, those an earlier batch had, with the row they first appeared on."""
        self._store()
        if not self._created or not phones:
            return {}
        if self._postgres:
            found = self._session.execute(FIND_SEEN, {"phones": phones})
        else:
            found = self._session.execute(select(_SEEN.c.phone, _SEEN.c.first_row).where(_SEEN.c.phone.in_(phones)))
        return {phone: row for phone, row in found}

    def _store(self) -> None:
        if not self._pending:
            return
        if not self._created:
            self._create()
        if self._postgres:
            self._session.execute(REMEMBER_SEEN, {"phones": list(self._pending), "rows": list(self._pending.values())})
        else:
            self._session.execute(insert(_SEEN), [{"phone": p, "first_row": r} for p, r in self._pending.items()])
        self._pending = {}

    def _create(self) -> None:
        on_commit = " ON COMMIT DROP" if self._postgres else ""
        self._session.execute(
            text(
                "CREATE TEMPORARY TABLE IF NOT EXISTS import_seen"
                f" (phone VARCHAR(20) PRIMARY KEY, first_row BIGINT NOT NULL){on_commit}"
            )
        )
        self._session.execute(delete(_SEEN))  # left by an earlier import on this connection (SQLite)
        self._created = True
