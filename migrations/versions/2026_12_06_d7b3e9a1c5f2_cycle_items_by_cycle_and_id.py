"""cycle_items (cycle_id, id): a cycle's items in id order, a page at a time (the dashboard's cycle page)

Without it a page of one cycle's items after a cursor is either a walk of the primary key through every
older cycle's items or a read of the whole cycle (up to a million rows) to sort it. Planning appends to the
index's rightmost page (ids grow within a cycle), so it costs planning little. Built CONCURRENTLY on
Postgres: a live cycle's dispatch keeps writing its items meanwhile.

Revision ID: d7b3e9a1c5f2
Revises: c4f7a2e9d1b5
Create Date: 2026-12-06 20:30:00.000000
"""

from collections.abc import Sequence

from alembic import op

revision: str = "d7b3e9a1c5f2"
down_revision: str | None = "c4f7a2e9d1b5"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

INDEX = "ix_cycle_items_cycle_id_id"


def upgrade() -> None:
    # CONCURRENTLY cannot run inside a transaction block.
    with op.get_context().autocommit_block():
        op.create_index(INDEX, "cycle_items", ["cycle_id", "id"], postgresql_concurrently=True)


def downgrade() -> None:
    op.drop_index(INDEX, table_name="cycle_items")
