"""The Telegram message each delivered alert became (chat id, message id) and the other sources it
listed, so that the message can be edited when more sources join its story.

Alerts delivered before keep NULL: they are never edited.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-04
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | Sequence[str] | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("alerts") as batch:
        batch.add_column(sa.Column("message_chat_id", sa.BigInteger()))
        batch.add_column(sa.Column("message_id", sa.BigInteger()))
        batch.add_column(sa.Column("message_sources", sa.Text()))


def downgrade() -> None:
    with op.batch_alter_table("alerts") as batch:
        batch.drop_column("message_sources")
        batch.drop_column("message_id")
        batch.drop_column("message_chat_id")
