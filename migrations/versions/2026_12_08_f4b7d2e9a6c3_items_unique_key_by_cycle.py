"""cycle_items: the unique key (cycle_id, contact_id), so a plan appends to it; a contact's items cycle by cycle

Led by the contact (revision a8e4c2f7b9d1), the unique key took each new item among that contact's items of
earlier cycles: a plan wrote into every leaf of an index that grows with every cycle run (1.2x the INSERT's time
with three earlier cycles of a million contacts; beyond shared_buffers, it reads the index from disk). And a
delivery report, to cancel its contact's call not yet placed, read every item the contact ever had. Led by the
cycle, a plan appends its entries at the index's end, as it does to the primary key.

A contact's items are then found cycle by cycle (shared/cycle_items.py): its pending ones in the few cycles that
may still send, all of them (erasure, the deletion trigger below) with a probe per cycle.

Built CONCURRENTLY on Postgres, the new key before the old one goes, so one item per contact in a cycle holds
throughout.

Revision ID: f4b7d2e9a6c3
Revises: e5a1c9f3d7b8
Create Date: 2026-12-08 14:00:00.000000
"""

from collections.abc import Sequence

from alembic import op
from sqlalchemy import text

revision: str = "f4b7d2e9a6c3"
down_revision: str | None = "e5a1c9f3d7b8"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BY_CYCLE, BY_CONTACT = "uq_cycle_items_cycle_id_contact_id", "uq_cycle_items_contact_id_cycle_id"
KEYS = {BY_CYCLE: ["cycle_id", "contact_id"], BY_CONTACT: ["contact_id", "cycle_id"]}

#: Deleting contacts deletes their items (revision f2c6a9e3d7b1): looked up in each cycle through the new key.
#: Every item has its cycle (deleting a cycle deletes its items).
EACH_CYCLE = "cycle_id IN (SELECT id FROM cycles) AND "
PG_FOLLOW_CONTACTS = """
CREATE OR REPLACE FUNCTION cycle_items_follow_contacts() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  DELETE FROM cycle_items WHERE {each_cycle}contact_id IN (SELECT id FROM gone);
  RETURN NULL;
END $$;
"""
SQLITE_FOLLOW_CONTACTS = """
CREATE TRIGGER tr_contacts_delete_items AFTER DELETE ON contacts FOR EACH ROW
BEGIN
  DELETE FROM cycle_items WHERE {each_cycle}contact_id = OLD.id;
END
"""


def upgrade() -> None:
    _swap(BY_CONTACT, BY_CYCLE, EACH_CYCLE)


def downgrade() -> None:
    _swap(BY_CYCLE, BY_CONTACT, "")


def _swap(old: str, new: str, each_cycle: str) -> None:
    if op.get_bind().dialect.name != "postgresql":
        _sqlite(old, new, each_cycle)
        return
    # CONCURRENTLY cannot run inside a transaction block.
    with op.get_context().autocommit_block():
        op.create_index(new, "cycle_items", KEYS[new], unique=True, postgresql_concurrently=True)
        op.execute(f"ALTER TABLE cycle_items ADD CONSTRAINT {new} UNIQUE USING INDEX {new}")
        op.drop_constraint(old, "cycle_items", type_="unique")
    op.execute(PG_FOLLOW_CONTACTS.format(each_cycle=each_cycle))


def _sqlite(old: str, new: str, each_cycle: str) -> None:
    """SQLite rebuilds the table to change a unique constraint, and refuses the rename back while a trigger on
    another table names it (as in revision a8e4c2f7b9d1): the triggers on cycle_items are made again afterwards,
    as they were, but for the contacts' one."""
    on_items = "SELECT name, sql FROM sqlite_master WHERE type = 'trigger' AND sql LIKE '%cycle_items%'"
    triggers: dict[str, str] = {name: sql for name, sql in op.get_bind().execute(text(on_items))}
    for name in triggers:
        op.execute(f"DROP TRIGGER {name}")
    with op.batch_alter_table("cycle_items") as batch:
        batch.drop_constraint(old, type_="unique")
        batch.create_unique_constraint(new, KEYS[new])
    triggers["tr_contacts_delete_items"] = SQLITE_FOLLOW_CONTACTS.format(each_cycle=each_cycle)
    for sql in triggers.values():
        op.execute(sql)
