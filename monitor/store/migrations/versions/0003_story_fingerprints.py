"""Near-duplicate stories (SPEC §5): a fingerprint per story and an index of its smallest hashes.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# 64-bit keys on PostgreSQL; INTEGER PRIMARY KEY (the rowid) on SQLite.
Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
Time = sa.DateTime(timezone=True)


def upgrade() -> None:
    # Stories stored before this revision have no fingerprint: new items find them by exact hash.
    with op.batch_alter_table("stories") as batch:
        batch.add_column(sa.Column("fingerprint", sa.Text()))
    op.create_table(
        "story_hashes",
        sa.Column("story_id", Id, nullable=False),
        sa.Column("hash", sa.BigInteger(), nullable=False),
        sa.Column("created_at", Time, nullable=False),
        sa.ForeignKeyConstraint(
            ["story_id"], ["stories.id"], name="fk_story_hashes_story_id_stories"
        ),
    )
    op.create_index("ix_story_hashes_hash_created_at", "story_hashes", ["hash", "created_at"])
    op.create_index("ix_story_hashes_story_id", "story_hashes", ["story_id"])


def downgrade() -> None:
    op.drop_table("story_hashes")
    with op.batch_alter_table("stories") as batch:
        batch.drop_column("fingerprint")
