"""ix_cycle_items_due ends with id: the claim's ORDER BY (next_attempt_at, id) is the index's order (issue 15)

Without id in the key, every batch a dispatcher claimed read all of its cycle's due items through the index
and sorted them to find the first hundred (under FOR UPDATE the sort is not bounded by the LIMIT): 0.8 s a
batch at a million contacts, which is why dispatch slowed as the cycle grew. With it, a claim reads a
batch's worth of index entries. Planning appends to the index as before (one next_attempt_at per channel
and group, ids growing). Built CONCURRENTLY on Postgres under another name, then swapped in: a live cycle
keeps dispatching meanwhile.

Revision ID: e4b8d2f6a1c9
Revises: c4e7a9d2f1b3
Create Date: 2026-12-06 23:10:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "e4b8d2f6a1c9"
down_revision: str | None = "c4e7a9d2f1b3"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

INDEX = "ix_cycle_items_due"
PENDING = sa.text("state = 'pending'")


def upgrade() -> None:
    _replace(["cycle_id", "channel", "next_attempt_at", "id"])


def downgrade() -> None:
    _replace(["cycle_id", "channel", "next_attempt_at"])


def _replace(columns: list[str]) -> None:
    if op.get_bind().dialect.name != "postgresql":
        op.drop_index(INDEX, table_name="cycle_items")
        op.create_index(INDEX, "cycle_items", columns)
        return
    # CONCURRENTLY cannot run inside a transaction block.
    with op.get_context().autocommit_block():
        op.create_index(f"{INDEX}_new", "cycle_items", columns, postgresql_where=PENDING, postgresql_concurrently=True)
        op.drop_index(INDEX, table_name="cycle_items", postgresql_concurrently=True)
        op.execute(f"ALTER INDEX {INDEX}_new RENAME TO {INDEX}")
