"""cycles/schedules.voice_languages, calls.language and calls.audio_url: voice in the contact's language

A cycle or schedule may give `voice_message` per language and `voice_audio_url` (shared/voice_languages.py):
a plain `voice_message` stays in its text column, the rest in the JSON `voice_languages`. Each call keeps the
language of its prompts and the recording it plays, so a live call answered from Postgres (Redis down) says
the same as one answered from the store.

Revision ID: b3e7c9a1d5f2
Revises: b3d9f1a7c5e2
Create Date: 2026-12-06 21:10:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "b3e7c9a1d5f2"
down_revision: str | None = "b3d9f1a7c5e2"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Not in batch mode: rebuilding `cycles` on SQLite would drop the trigger that deletes a cycle's items.
    for table in ("cycles", "schedules"):
        document = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
        op.add_column(table, sa.Column("voice_languages", document, nullable=True))
    op.add_column("calls", sa.Column("language", sa.String(16), nullable=True))
    op.add_column("calls", sa.Column("audio_url", sa.Text(), nullable=True))


def downgrade() -> None:
    op.drop_column("calls", "audio_url")
    op.drop_column("calls", "language")
    for table in ("schedules", "cycles"):
        op.drop_column(table, "voice_languages")
