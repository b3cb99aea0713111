"""cycle_items.contact_id without a foreign key: planning checked it row by row (a third of a 1M plan)

The foreign key's per-row check (a lookup and a KEY SHARE lock of the contact through a trigger, 900,000
times for a million contacts) was the largest part of planning after the rows themselves (issue 15).
Planning now takes that same lock on the contacts it reads, in its one statement (`FOR KEY SHARE`: a
contact being erased meanwhile is waited for and left out, and an erasure waits for the plan and then
cancels the contact's new items: worker/cycles/planning.py). Planning is the only writer of items.
ON DELETE CASCADE stays, as a trigger on contacts (one statement per deleted set on Postgres, per row on
SQLite), as revision b5d2f0c7e913 did for cycles.

Revision ID: f2c6a9e3d7b1
Revises: e4b8d2f6a1c9
Create Date: 2026-12-06 23:30:00.000000
"""

from collections.abc import Sequence

from alembic import op

revision: str = "f2c6a9e3d7b1"
down_revision: str | None = "e4b8d2f6a1c9"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

FOREIGN_KEY = "fk_cycle_items_contact_id_contacts"

PG_CASCADE = """
CREATE FUNCTION cycle_items_follow_contacts() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  DELETE FROM cycle_items WHERE contact_id IN (SELECT id FROM gone);
  RETURN NULL;
END $$;
CREATE TRIGGER tr_contacts_delete_items AFTER DELETE ON contacts
  REFERENCING OLD TABLE AS gone FOR EACH STATEMENT EXECUTE FUNCTION cycle_items_follow_contacts();
"""

SQLITE_CASCADE = """
CREATE TRIGGER tr_contacts_delete_items AFTER DELETE ON contacts FOR EACH ROW
BEGIN
  DELETE FROM cycle_items WHERE contact_id = OLD.id;
END
"""


#: SQLite rebuilds the table to change its keys, and refuses the rename back while a trigger on another table
#: names it: the cycles trigger (revision b5d2f0c7e913) is dropped for the rebuild and made again.
SQLITE_CYCLES_CASCADE = """
CREATE TRIGGER tr_cycles_delete_items AFTER DELETE ON cycles FOR EACH ROW
BEGIN
  DELETE FROM cycle_items WHERE cycle_id = OLD.id;
END
"""


def upgrade() -> None:
    sqlite = op.get_bind().dialect.name == "sqlite"
    if sqlite:
        op.execute("DROP TRIGGER tr_cycles_delete_items")
    with op.batch_alter_table("cycle_items") as batch:
        batch.drop_constraint(FOREIGN_KEY, type_="foreignkey")
    if sqlite:
        op.execute(SQLITE_CYCLES_CASCADE)
    op.execute(SQLITE_CASCADE if sqlite else PG_CASCADE)


def downgrade() -> None:
    sqlite = op.get_bind().dialect.name == "sqlite"
    if sqlite:
        op.execute("DROP TRIGGER tr_contacts_delete_items")
        op.execute("DROP TRIGGER tr_cycles_delete_items")
    else:
        op.execute("DROP TRIGGER tr_contacts_delete_items ON contacts; DROP FUNCTION cycle_items_follow_contacts()")
    with op.batch_alter_table("cycle_items") as batch:
        batch.create_foreign_key(FOREIGN_KEY, "contacts", ["contact_id"], ["id"], ondelete="CASCADE")
    if sqlite:
        op.execute(SQLITE_CYCLES_CASCADE)
