"""What an alert shows: the title and text of the item as it was when it matched.

An alert held by a mute, a digest or a retry is rendered later; the item may have been updated
meanwhile, and the match's hit offsets point into the text that matched. Older matches keep NULL
and are rendered from the item, as before.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-03
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | Sequence[str] | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("matches") as batch:
        batch.add_column(sa.Column("title", sa.Text()))
        batch.add_column(sa.Column("text", sa.Text()))


def downgrade() -> None:
    with op.batch_alter_table("matches") as batch:
        batch.drop_column("text")
        batch.drop_column("title")
