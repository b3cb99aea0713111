"""contacts carry tags, a language and who changed their consent; erased contacts leave anonymised history

- `contacts.tags`: `text[]` on Postgres with a GIN index (`ix_contacts_tags`), so a cycle's "carries any of
  these tags" (`tags && ARRAY[...]`) is one indexed predicate; a JSON list on SQLite (whose index of the
  same name serves nothing). Nullable: adding it rewrites no row.
- `contacts.language` (ISO 639 code) and `contacts.consent_by` (who made the consent change last applied).
- `messages.contact_id` and `cycle_items.contact_id` may be NULL: an erased contact's messages and items
  stay, without the number, the name or the text, so cycle counts and costs still add up (shared/erasure.py).
  On Postgres dropping NOT NULL only changes the catalogue.
- `erased_numbers`: keyed hashes of erased numbers, with an opt-out that outlives the erasure;
  `erasure_keys`: the hashing key made by Reach when ERASURE_KEY is not set.

Revision ID: f1c6a8e2d4b7
Revises: f3a8c5e1b7d2
Create Date: 2026-12-03 10:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "f1c6a8e2d4b7"
down_revision: str | None = "f3a8c5e1b7d2"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

#: On SQLite, batch mode copies cycle_items to a new table; the trigger on cycles that names cycle_items
#: (revision b5d2f0c7e913) would make that rename fail, so it is dropped for the copy and made again.
SQLITE_CASCADE = """
CREATE TRIGGER tr_cycles_delete_items AFTER DELETE ON cycles FOR EACH ROW
BEGIN
  DELETE FROM cycle_items WHERE cycle_id = OLD.id;
END
"""


def contact_id_nullable(nullable: bool) -> None:
    sqlite = op.get_bind().dialect.name == "sqlite"
    if sqlite:
        op.execute("DROP TRIGGER tr_cycles_delete_items")
    for table in ("messages", "cycle_items"):
        with op.batch_alter_table(table) as batch:
            batch.alter_column("contact_id", existing_type=sa.BigInteger(), nullable=nullable)
    if sqlite:
        op.execute(SQLITE_CASCADE)


def upgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    tags = postgresql.ARRAY(sa.Text()) if postgres else sa.JSON()
    with op.batch_alter_table("contacts") as batch:
        batch.add_column(sa.Column("consent_by", sa.String(length=120), nullable=True))
        batch.add_column(sa.Column("tags", tags, nullable=True))
        batch.add_column(sa.Column("language", sa.String(length=16), nullable=True))
    op.create_index("ix_contacts_tags", "contacts", ["tags"], postgresql_using="gin")
    contact_id_nullable(True)
    op.create_table(
        "erased_numbers",
        sa.Column("phone_hash", sa.String(length=64), nullable=False),
        sa.Column("erased_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("opted_out_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("consent_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("consent_by", sa.String(length=120), nullable=True),
        sa.PrimaryKeyConstraint("phone_hash", name=op.f("pk_erased_numbers")),
    )
    op.create_table(
        "erasure_keys",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("key", sa.String(length=100), nullable=False),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.text("CURRENT_TIMESTAMP"), nullable=False
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_erasure_keys")),
    )


def downgrade() -> None:
    op.drop_table("erasure_keys")
    op.drop_table("erased_numbers")
    # Rows of erased contacts have no contact to point at any more: they go with the constraint they break.
    for table in ("cycle_items", "messages"):
        op.execute(f"DELETE FROM {table} WHERE contact_id IS NULL")
    contact_id_nullable(False)
    op.drop_index("ix_contacts_tags", table_name="contacts")
    with op.batch_alter_table("contacts") as batch:
        batch.drop_column("language")
        batch.drop_column("tags")
        batch.drop_column("consent_by")
