"""Subscribers in control: blocked chats, what a chat is, per-watchlist mutes and forum topics,
and the index that counts what a recipient got in the last minute (bursts).

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-04
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

Time = sa.DateTime(timezone=True)


def upgrade() -> None:
    with op.batch_alter_table("subscribers") as batch:
        batch.add_column(
            sa.Column("blocked", sa.Boolean(), server_default=sa.false(), nullable=False)
        )
        batch.add_column(sa.Column("chat_type", sa.String(length=20)))
        batch.add_column(sa.Column("title", sa.Text()))
    with op.batch_alter_table("subscriptions") as batch:
        batch.add_column(sa.Column("thread_id", sa.BigInteger()))
        batch.add_column(sa.Column("muted_until", Time))
    op.create_index("ix_alerts_recipient_sent_at", "alerts", ["recipient", "sent_at"])


def downgrade() -> None:
    op.drop_index("ix_alerts_recipient_sent_at", table_name="alerts")
    with op.batch_alter_table("subscriptions") as batch:
        batch.drop_column("muted_until")
        batch.drop_column("thread_id")
    with op.batch_alter_table("subscribers") as batch:
        batch.drop_column("title")
        batch.drop_column("chat_type")
        batch.drop_column("blocked")
