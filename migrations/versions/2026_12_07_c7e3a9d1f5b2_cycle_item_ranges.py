"""cycles record the range of their items' ids; cycle_items loses its (cycle_id, id) index (issue 15)

A plan inserts its cycle's items in one statement and records `first_item_id` and `last_item_id` on the
cycle: every item of the cycle has an id in that range. Its readers (the report, `reached`, the failures
page, the exports, the SMS bill of an older plan) read the primary key over that range, checking the cycle's
id, instead of ix_cycle_items_cycle_id_id, which every planned item entered (0.55-0.9 s of a plan at a million
contacts). Existing cycles get their range from that index before it goes. The trigger that deletes a
cycle's items goes by the range too (on Postgres and SQLite alike), and by the cycle's id alone where none
was recorded.

Revision ID: c7e3a9d1f5b2
Revises: b2d6f9a3c8e1
Create Date: 2026-12-07 08:30:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "c7e3a9d1f5b2"
down_revision: str | None = "b2d6f9a3c8e1"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

INDEX = "ix_cycle_items_cycle_id_id"
COLUMNS = ("first_item_id", "last_item_id")

BACKFILL = """
UPDATE cycles SET
  first_item_id = (SELECT min(id) FROM cycle_items WHERE cycle_id = cycles.id),
  last_item_id = (SELECT max(id) FROM cycle_items WHERE cycle_id = cycles.id)
"""

#: Where a cycle that goes had its items: its range when recorded, else every id.
IN_RANGE = (
    "cycle_items.id BETWEEN coalesce({row}.first_item_id, 0) AND coalesce({row}.last_item_id, 9223372036854775807)"
)

PG_FOLLOW = """
CREATE OR REPLACE FUNCTION cycle_items_follow_cycles() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  {body};
  RETURN NULL;
END $$;
"""
PG_BY_RANGE = "DELETE FROM cycle_items USING gone WHERE cycle_items.cycle_id = gone.id AND " + IN_RANGE.format(
    row="gone"
)
PG_BY_ID = "DELETE FROM cycle_items WHERE cycle_id IN (SELECT id FROM gone)"

SQLITE_FOLLOW = """
CREATE TRIGGER tr_cycles_delete_items AFTER DELETE ON cycles FOR EACH ROW
BEGIN
  DELETE FROM cycle_items WHERE cycle_id = OLD.id{also};
END
"""


def upgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    for column in COLUMNS:
        op.add_column("cycles", sa.Column(column, sa.BigInteger() if postgres else sa.Integer(), nullable=True))
    op.execute(BACKFILL)
    if postgres:
        op.execute(PG_FOLLOW.format(body=PG_BY_RANGE))
        # CONCURRENTLY cannot run inside a transaction block.
        with op.get_context().autocommit_block():
            op.drop_index(INDEX, table_name="cycle_items", postgresql_concurrently=True)
        return
    op.execute("DROP TRIGGER tr_cycles_delete_items")
    op.execute(SQLITE_FOLLOW.format(also=" AND " + IN_RANGE.format(row="OLD")))
    op.drop_index(INDEX, table_name="cycle_items")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        with op.get_context().autocommit_block():
            op.create_index(INDEX, "cycle_items", ["cycle_id", "id"], postgresql_concurrently=True)
        op.execute(PG_FOLLOW.format(body=PG_BY_ID))
        for column in COLUMNS:
            op.drop_column("cycles", column)
        return
    op.create_index(INDEX, "cycle_items", ["cycle_id", "id"])
    # SQLite drops no column a trigger names, and its batch copy of `cycles` would drop the trigger anyway.
    op.execute("DROP TRIGGER tr_cycles_delete_items")
    with op.batch_alter_table("cycles") as batch:
        for column in COLUMNS:
            batch.drop_column(column)
    op.execute(SQLITE_FOLLOW.format(also=""))
