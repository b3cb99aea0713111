"""Postgres' way in for a drained batch: every item COPYed (binary) into a temp staging table, then one statement
keeps the raw callbacks, stores the new delivery reports and returns them, with the unapplied reports of the same
ids, joined to their messages.

That was four round trips over one array per column (`record_raw`, `apply_dlrs`, then `apply_pending_dlrs`'s
read), and psycopg dumps arrays in Python, element by element: a fifth of the drain's CPU (py-spy,
bench/RESULTS.md "DLR apply" round 3). COPY's rows are formatted by psycopg's C code. The rules are the same
statements' (`ON CONFLICT` on `raw_callbacks.inbox_id` and `dlr_events (at_message_id, status)`); SQLite
(embedded mode) keeps those functions.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import text
from sqlalchemy.orm import Session

from shared import fast_json
from shared.callbacks import Dlr, parse
from shared.inbox import InboxItem
from worker.ingest.batch_sql import driver_cursor, driver_errors, fetch
from worker.ingest.dlr import PendingEvent, event_values

#: One per connection (temp tables are), emptied at every commit; `IF NOT EXISTS` costs one catalog look a batch
#: and, unlike a flag kept on the connection, cannot be fooled by a rolled-back creation.
CREATE_STAGING = text(
    """
    CREATE TEMP TABLE IF NOT EXISTS drain_in (
        seq int, inbox_id text, kind text, received_at timestamptz, payload text,
        at_message_id text, status text, failure_reason text, phone text, network_code text, retry_count int
    ) ON COMMIT DELETE ROWS
    """
)
COPY_STAGING = "COPY drain_in FROM STDIN (FORMAT BINARY)"
STAGING_TYPES = ["int4", "text", "text", "timestamptz", "text", "text", "text", "text", "text", "text", "int4"]

# The batch is taken out of the staging table by the statement that uses it (DELETE ... RETURNING), so a second
# batch in the same transaction starts from an empty table. A data-modifying CTE does not see its siblings'
# rows in the table, so `older` (unapplied reports stored before, what apply_pending_dlrs reads besides the new
# ones) reads the table as it was, and the new ones come from `new`'s RETURNING. Duplicates within the batch:
# the first in inbox order wins, as in one INSERT over arrays. A new report whose message exists is stored
# applied (this transaction applies it: `apply_pending_events`): marking it after was an UPDATE of a row just
# inserted, which the partial indexes on `applied_at IS NULL` make a new row version in every index.
RECORD_AND_STORE = """
    WITH batch AS (DELETE FROM drain_in RETURNING *),
    raw AS (
        INSERT INTO raw_callbacks (inbox_id, kind, received_at, payload)
        SELECT inbox_id, kind, received_at, CAST(payload AS jsonb) FROM batch ORDER BY seq
        ON CONFLICT (inbox_id) DO NOTHING
        RETURNING inbox_id
    ),
    new AS (
        INSERT INTO dlr_events
            (at_message_id, status, failure_reason, phone, network_code, retry_count, received_at, applied_at)
        SELECT b.at_message_id, b.status, b.failure_reason, b.phone, b.network_code, b.retry_count, b.received_at,
               CASE WHEN m.id IS NOT NULL THEN CAST(%(now)s AS timestamptz) END
        FROM batch AS b JOIN raw USING (inbox_id) LEFT JOIN messages AS m ON m.at_message_id = b.at_message_id
        WHERE b.kind = 'dlr' AND b.at_message_id IS NOT NULL
        ORDER BY b.seq
        ON CONFLICT (at_message_id, status) DO NOTHING
        RETURNING id, at_message_id, status, failure_reason, network_code, received_at
    ),
    older AS (
        SELECT d.id, d.at_message_id, d.status, d.failure_reason, d.network_code, d.received_at
        FROM dlr_events AS d
        WHERE d.applied_at IS NULL AND d.at_message_id IN (SELECT at_message_id FROM new)
    )
    SELECT 'raw' AS source, inbox_id, CAST(NULL AS bigint) AS event_id, CAST(NULL AS bigint) AS message_id,
           CAST(NULL AS text) AS at_message_id, CAST(NULL AS text) AS status, CAST(NULL AS text) AS failure_reason,
           CAST(NULL AS text) AS network_code, CAST(NULL AS timestamptz) AS received_at
    FROM raw
    UNION ALL
    SELECT 'new', NULL, e.id, m.id, e.at_message_id, e.status, e.failure_reason, e.network_code, e.received_at
    FROM new AS e LEFT JOIN messages AS m ON m.at_message_id = e.at_message_id
    UNION ALL
    SELECT 'old', NULL, e.id, m.id, e.at_message_id, e.status, e.failure_reason, e.network_code, e.received_at
    FROM older AS e JOIN messages AS m ON m.at_message_id = e.at_message_id
"""


@dataclass(frozen=True)
class Stored:
    """What one batch's statement did: the items recorded for the first time (in inbox order), the delivery
    reports it stored (id, status and reason of each), the unapplied reports of those ids that have a message,
    as `apply_pending_events` takes them, and which of those are still to be marked applied (the older ones)."""

    fresh: list[InboxItem]
    new_reports: list[tuple[str, str, str | None]]
    pending: list[PendingEvent]
    unmarked: list[int]


def record_and_store(session: Session, items: list[InboxItem]) -> Stored:
    """Keep every callback verbatim and store the new delivery reports, in one COPY and one statement.

    Reports are parsed before anyone knows which items are new: a report that does not parse fails the batch
    only when its item is new, as when only new items were parsed."""
    errors: dict[str, Exception] = {}
    session.execute(CREATE_STAGING)
    with driver_errors(COPY_STAGING), driver_cursor(session) as cursor, cursor.copy(COPY_STAGING) as copy:
        copy.set_types(STAGING_TYPES)
        for seq, item in enumerate(items):
            report: tuple[object, ...] = _NO_REPORT
            if item.kind == "dlr":
                try:
                    report = event_values(parse(Dlr, item.data))
                except Exception as exc:  # raised below if the item is new: the drain parks it then
                    errors[item.id] = exc
            copy.write_row((seq, item.id, item.kind, _aware(item.received_at), fast_json.dumps(item.data), *report))
    rows = fetch(session, RECORD_AND_STORE, {"now": datetime.now(UTC)})
    fresh_ids = {row[1] for row in rows if row[0] == "raw"}
    for item in items:
        if item.id in fresh_ids and item.id in errors:
            raise errors[item.id]
    events = [row for row in rows if row[0] != "raw"]
    return Stored(
        fresh=[item for item in items if item.id in fresh_ids],
        new_reports=[(row[4], row[5], row[6]) for row in events if row[0] == "new"],
        pending=[(row[2], row[3], row[5], row[6], row[7], row[8]) for row in events if row[3] is not None],
        unmarked=[row[2] for row in events if row[0] == "old"],
    )


_NO_REPORT = (None,) * 6


def _aware(at: datetime) -> datetime:
    """The receiver stamps items in UTC; one queued by hand without a zone is taken as UTC too (binary COPY into
    timestamptz cannot take a naive time, and such an item must not be parked for it)."""
    return at if at.tzinfo is not None else at.replace(tzinfo=UTC)
