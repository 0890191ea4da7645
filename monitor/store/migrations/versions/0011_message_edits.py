"""Edits waiting for sent Telegram alerts: when more sources join a story, its alerts' messages are
due an edit that lists them (`edit_due_at`), asked for `edit_requests` times, tried
`edit_attempts` times since it last succeeded.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-04
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | Sequence[str] | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("alerts") as batch:
        batch.add_column(sa.Column("edit_due_at", sa.DateTime(timezone=True)))
        batch.add_column(
            sa.Column("edit_requests", sa.Integer(), nullable=False, server_default=sa.text("0"))
        )
        batch.add_column(
            sa.Column("edit_attempts", sa.Integer(), nullable=False, server_default=sa.text("0"))
        )
        batch.create_index("ix_alerts_edit_due_at", ["edit_due_at"])


def downgrade() -> None:
    with op.batch_alter_table("alerts") as batch:
        batch.drop_index("ix_alerts_edit_due_at")
        batch.drop_column("edit_attempts")
        batch.drop_column("edit_requests")
        batch.drop_column("edit_due_at")
