"""cycle_items: a planned item enters four indexes, not five (issue 15)

Each index a pending item enters cost planning about as much as writing the row (0.6-0.9 s of backend CPU
each at a million contacts, measured one by one). The unique (cycle_id, contact_id) and the plain
(contact_id) become one unique (contact_id, cycle_id): the one-item-per-contact rule, and the lookup of a
contact's items (erasure, consent, the delete trigger). In a later cycle its entries go after each
contact's earlier ones, as the (contact_id) index's did.

ix_cycle_items_due keeps its key (cycle_id, channel, next_attempt_at, id): keyed with the channel last, its
SMS entries were appended at planning (about a second less at a million), but an SMS claim then walked past
every pending voice item due before it, 21 ms a claim against 0.18 ms (bench/RESULTS.md section 10).

Built CONCURRENTLY on Postgres, the new one before the old ones go, so a live cycle keeps its guarantees.

Revision ID: a8e4c2f7b9d1
Revises: f2c6a9e3d7b1
Create Date: 2026-12-07 02:00:00.000000
"""

from collections.abc import Sequence

from alembic import op

revision: str = "a8e4c2f7b9d1"
down_revision: str | None = "f2c6a9e3d7b1"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

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
        _sqlite((OLD_UNIQUE, NEW_UNIQUE, ["contact_id", "cycle_id"]))
        op.drop_index(CONTACT_INDEX, table_name="cycle_items")
        return
    # CONCURRENTLY cannot run inside a transaction block.
    with op.get_context().autocommit_block():
        op.create_index(
            NEW_UNIQUE, "cycle_items", ["contact_id", "cycle_id"], unique=True, postgresql_concurrently=True
        )
        op.execute(f"ALTER TABLE cycle_items ADD CONSTRAINT {NEW_UNIQUE} UNIQUE USING INDEX {NEW_UNIQUE}")
        op.drop_constraint(OLD_UNIQUE, "cycle_items", type_="unique")
        op.drop_index(CONTACT_INDEX, table_name="cycle_items", postgresql_concurrently=True)


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        _sqlite((NEW_UNIQUE, OLD_UNIQUE, ["cycle_id", "contact_id"]))
        op.create_index(CONTACT_INDEX, "cycle_items", ["contact_id"])
        return
    with op.get_context().autocommit_block():
        op.create_index(CONTACT_INDEX, "cycle_items", ["contact_id"], postgresql_concurrently=True)
        op.create_index(
            OLD_UNIQUE, "cycle_items", ["cycle_id", "contact_id"], unique=True, postgresql_concurrently=True
        )
        op.execute(f"ALTER TABLE cycle_items ADD CONSTRAINT {OLD_UNIQUE} UNIQUE USING INDEX {OLD_UNIQUE}")
        op.drop_constraint(NEW_UNIQUE, "cycle_items", type_="unique")


def _sqlite(unique: tuple[str, str, list[str]]) -> None:
    old, new, columns = unique
    for name in SQLITE_TRIGGERS:
        op.execute(f"DROP TRIGGER {name}")
    with op.batch_alter_table("cycle_items") as batch:
        batch.drop_constraint(old, type_="unique")
        batch.create_unique_constraint(new, columns)
    for trigger in SQLITE_TRIGGERS.values():
        op.execute(trigger)
