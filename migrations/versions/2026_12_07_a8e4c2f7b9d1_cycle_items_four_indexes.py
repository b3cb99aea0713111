"""cycle_items: a planned item enters four indexes, not five, and is appended to the claim's (issue 15)

Each index a pending item enters cost planning about as much as writing the row (0.6-0.9 s of backend CPU
each at a million contacts, measured one by one). Two changes:

- the unique (cycle_id, contact_id) and the plain (contact_id) become one unique (contact_id, cycle_id): the
  one-item-per-contact rule, and the lookup of a contact's items (erasure, consent, the delete trigger). In a
  later cycle its entries go after each contact's earlier ones, as the (contact_id) index's did;
- ix_cycle_items_due is keyed (cycle_id, next_attempt_at, id, channel), not (cycle_id, channel,
  next_attempt_at, id): with the channel before the id, the SMS items' entries went in the middle of the
  index (each insert a walk from the root, 2.3 s for the index) while only the voice ones were appended.
  The claim still reads its batch in index order; the channel is checked in the index entry. Items held for
  a send window (a later next_attempt_at) still put those due now before them, as before.

Built CONCURRENTLY on Postgres, the new ones before the old ones go, so a live cycle keeps its guarantees.

Revision ID: a8e4c2f7b9d1
Revises: f2c6a9e3d7b1
Create Date: 2026-12-07 02:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "a8e4c2f7b9d1"
down_revision: str | None = "f2c6a9e3d7b1"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

DUE = "ix_cycle_items_due"
PENDING = sa.text("state = 'pending'")
CONTACT_INDEX = "ix_cycle_items_contact_id"
NEW_UNIQUE, OLD_UNIQUE = "uq_cycle_items_contact_id_cycle_id", "uq_cycle_items_cycle_id_contact_id"

#: SQLite rebuilds the table to change a unique constraint, and refuses the rename back while a trigger on
#: another table names it (as in revision f2c6a9e3d7b1): both cascade triggers are made again afterwards.
SQLITE_TRIGGERS = {
    "tr_cycles_delete_items": """
CREATE TRIGGER tr_cycles_delete_items AFTER DELETE ON cycles FOR EACH ROW
BEGIN
  DELETE FROM cycle_items WHERE cycle_id = OLD.id;
END
""",
    "tr_contacts_delete_items": """
CREATE TRIGGER tr_contacts_delete_items AFTER DELETE ON contacts FOR EACH ROW
BEGIN
  DELETE FROM cycle_items WHERE contact_id = OLD.id;
END
""",
}


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        _sqlite(["cycle_id", "next_attempt_at", "id", "channel"], (OLD_UNIQUE, NEW_UNIQUE, ["contact_id", "cycle_id"]))
        op.drop_index(CONTACT_INDEX, table_name="cycle_items")
        return
    # CONCURRENTLY cannot run inside a transaction block.
    with op.get_context().autocommit_block():
        _replace_due(["cycle_id", "next_attempt_at", "id", "channel"])
        op.create_index(
            NEW_UNIQUE, "cycle_items", ["contact_id", "cycle_id"], unique=True, postgresql_concurrently=True
        )
        op.execute(f"ALTER TABLE cycle_items ADD CONSTRAINT {NEW_UNIQUE} UNIQUE USING INDEX {NEW_UNIQUE}")
        op.drop_constraint(OLD_UNIQUE, "cycle_items", type_="unique")
        op.drop_index(CONTACT_INDEX, table_name="cycle_items", postgresql_concurrently=True)


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        _sqlite(["cycle_id", "channel", "next_attempt_at", "id"], (NEW_UNIQUE, OLD_UNIQUE, ["cycle_id", "contact_id"]))
        op.create_index(CONTACT_INDEX, "cycle_items", ["contact_id"])
        return
    with op.get_context().autocommit_block():
        _replace_due(["cycle_id", "channel", "next_attempt_at", "id"])
        op.create_index(CONTACT_INDEX, "cycle_items", ["contact_id"], postgresql_concurrently=True)
        op.create_index(
            OLD_UNIQUE, "cycle_items", ["cycle_id", "contact_id"], unique=True, postgresql_concurrently=True
        )
        op.execute(f"ALTER TABLE cycle_items ADD CONSTRAINT {OLD_UNIQUE} UNIQUE USING INDEX {OLD_UNIQUE}")
        op.drop_constraint(NEW_UNIQUE, "cycle_items", type_="unique")


def _replace_due(columns: list[str]) -> None:
    op.create_index(f"{DUE}_new", "cycle_items", columns, postgresql_where=PENDING, postgresql_concurrently=True)
    op.drop_index(DUE, table_name="cycle_items", postgresql_concurrently=True)
    op.execute(f"ALTER INDEX {DUE}_new RENAME TO {DUE}")


def _sqlite(due: list[str], unique: tuple[str, str, list[str]]) -> None:
    old, new, columns = unique
    op.drop_index(DUE, table_name="cycle_items")
    op.create_index(DUE, "cycle_items", due)
    for name in SQLITE_TRIGGERS:
        op.execute(f"DROP TRIGGER {name}")
    with op.batch_alter_table("cycle_items") as batch:
        batch.drop_constraint(old, type_="unique")
        batch.create_unique_constraint(new, columns)
    for trigger in SQLITE_TRIGGERS.values():
        op.execute(trigger)
