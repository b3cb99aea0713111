"""a cycle with no recorded range of items has none: deleting it reads no cycle_items (the operator's day)

Only planning inserts a cycle's items, and it records their range of ids (revision c7e3a9d1f5b2) in the same
transaction; that revision's backfill gave every cycle that had items its range. A cycle without one (never
planned: a scheduled, skipped or cancelled one, or a plan of no contact from before ranges) has no items, yet
the trigger that deletes a cycle's items took "no range" for "every id" and read all of cycle_items (every
cycle's items, millions, with no index on the cycle's id) to delete nothing. It now deletes over the range
alone, so no range is no row.

Revision ID: e5a1c9f3d7b8
Revises: d3f8b1e6a4c7
Create Date: 2026-12-07 10:50:00.000000
"""

from collections.abc import Sequence

from alembic import op

revision: str = "e5a1c9f3d7b8"
down_revision: str | None = "d3f8b1e6a4c7"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

#: Where a cycle that goes had its items: its recorded range (none recorded: no item).
IN_RANGE = "cycle_items.id BETWEEN {row}.first_item_id AND {row}.last_item_id"
#: Before: no range recorded was every id.
IN_RANGE_OR_ALL = (
    "cycle_items.id BETWEEN coalesce({row}.first_item_id, 0) AND coalesce({row}.last_item_id, 9223372036854775807)"
)

#: Postgres looks at the rows deleted first: a join of cycle_items with them may still scan the table (Postgres
#: cannot know the transition table's ranges are empty when it plans the statement).
PG_FOLLOW = """
CREATE OR REPLACE FUNCTION cycle_items_follow_cycles() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF {any_planned} THEN
    DELETE FROM cycle_items USING gone WHERE cycle_items.cycle_id = gone.id AND {in_range};
  END IF;
  RETURN NULL;
END $$;
"""
ANY_PLANNED = "EXISTS (SELECT 1 FROM gone WHERE first_item_id IS NOT NULL)"

SQLITE_FOLLOW = """
CREATE TRIGGER tr_cycles_delete_items AFTER DELETE ON cycles FOR EACH ROW
BEGIN
  DELETE FROM cycle_items WHERE cycle_id = OLD.id AND {in_range};
END
"""


def upgrade() -> None:
    _follow(IN_RANGE, ANY_PLANNED)


def downgrade() -> None:
    _follow(IN_RANGE_OR_ALL, "true")


def _follow(in_range: str, any_planned: str) -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(PG_FOLLOW.format(in_range=in_range.format(row="gone"), any_planned=any_planned))
        return
    op.execute("DROP TRIGGER tr_cycles_delete_items")
    op.execute(SQLITE_FOLLOW.format(in_range=in_range.format(row="OLD")))
