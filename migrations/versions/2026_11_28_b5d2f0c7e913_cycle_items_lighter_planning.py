"""cycle_items lighter to plan: no per-row check against cycles, state index only where dispatch reads it

Planning a million contacts is one INSERT ... SELECT into cycle_items; EXPLAIN ANALYZE showed half its
time in the two foreign-key triggers (one check per row each) and most of the rest in the five indexes
(bench/RESULTS.md, "Cycle at scale"). Two changes, both measured there:

- The foreign key cycle_items.cycle_id -> cycles goes. Its per-row check proved nothing: planning is the
  only writer of items and inserts them for a cycle row it holds FOR UPDATE. Its ON DELETE CASCADE stays,
  as a trigger on cycles (one statement per deleted set on Postgres, per row on SQLite).
- ix_cycle_items_cycle_id_state keeps only items past `pending`: what finish_if_done reads (claimed,
  submitting, sent); pending items are found through ix_cycle_items_due. A freshly planned cycle (all
  pending) then writes nothing into it.

Revision ID: b5d2f0c7e913
Revises: e7b3c1d4a5f6
Create Date: 2026-11-28 18:30:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "b5d2f0c7e913"
down_revision: str | None = "e7b3c1d4a5f6"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

NOT_PENDING = "state <> 'pending'"

PG_CASCADE = """
CREATE FUNCTION cycle_items_follow_cycles() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  DELETE FROM cycle_items WHERE cycle_id IN (SELECT id FROM gone);
  RETURN NULL;
END $$;
CREATE TRIGGER tr_cycles_delete_items AFTER DELETE ON cycles
  REFERENCING OLD TABLE AS gone FOR EACH STATEMENT EXECUTE FUNCTION cycle_items_follow_cycles();
"""

SQLITE_CASCADE = """
CREATE TRIGGER tr_cycles_delete_items AFTER DELETE ON cycles FOR EACH ROW
BEGIN
  DELETE FROM cycle_items WHERE cycle_id = OLD.id;
END
"""


def upgrade() -> None:
    sqlite = op.get_bind().dialect.name == "sqlite"
    with op.batch_alter_table("cycle_items") as batch:
        batch.drop_constraint("fk_cycle_items_cycle_id_cycles", type_="foreignkey")
        batch.drop_index("ix_cycle_items_cycle_id_state")
    op.create_index(
        "ix_cycle_items_cycle_id_state",
        "cycle_items",
        ["cycle_id", "state"],
        postgresql_where=sa.text(NOT_PENDING),
        sqlite_where=sa.text(NOT_PENDING),
    )
    if sqlite:
        op.execute(SQLITE_CASCADE)
    else:
        op.execute(PG_CASCADE)


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        op.execute("DROP TRIGGER tr_cycles_delete_items")
    else:
        op.execute("DROP TRIGGER tr_cycles_delete_items ON cycles; DROP FUNCTION cycle_items_follow_cycles()")
    op.drop_index("ix_cycle_items_cycle_id_state", table_name="cycle_items")
    with op.batch_alter_table("cycle_items") as batch:
        batch.create_index("ix_cycle_items_cycle_id_state", ["cycle_id", "state"])
        batch.create_foreign_key("fk_cycle_items_cycle_id_cycles", "cycles", ["cycle_id"], ["id"], ondelete="CASCADE")
