"""import refusals: an operator API import's refused rows, downloadable in full (the answer shows the first ones)

Revision ID: f3a8c5e1b7d2
Revises: f3a8c5e1d2b4
Create Date: 2026-12-06 17:30:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "f3a8c5e1b7d2"
down_revision: str | None = "f3a8c5e1d2b4"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "contact_imports",
        sa.Column("id", BIG_ID, nullable=False),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.text("CURRENT_TIMESTAMP"), nullable=False
        ),
        sa.Column("received", sa.BigInteger(), nullable=False),
        sa.Column("created", sa.BigInteger(), nullable=False),
        sa.Column("updated", sa.BigInteger(), nullable=False),
        sa.Column("refused", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_contact_imports")),
    )
    op.create_index(op.f("ix_contact_imports_created_at"), "contact_imports", ["created_at"], unique=False)
    op.create_table(
        "import_refusals",
        sa.Column("import_id", BIG_ID, nullable=False),
        sa.Column("row_number", sa.BigInteger(), nullable=False),
        sa.Column("phone", sa.Text(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(
            ["import_id"],
            ["contact_imports.id"],
            name=op.f("fk_import_refusals_import_id_contact_imports"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("import_id", "row_number", name=op.f("pk_import_refusals")),
    )


def downgrade() -> None:
    op.drop_table("import_refusals")
    op.drop_index(op.f("ix_contact_imports_created_at"), table_name="contact_imports")
    op.drop_table("contact_imports")
