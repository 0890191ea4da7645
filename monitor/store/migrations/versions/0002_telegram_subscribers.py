"""Telegram subscribers and their watchlist subscriptions (issue 4, SPEC §6).

Revision ID: 0002
Revises: 0001
Create Date: 2025-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# 64-bit keys on PostgreSQL; INTEGER PRIMARY KEY (the rowid) on SQLite.
Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
Time = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "subscribers",
        sa.Column("id", Id, nullable=False),
        sa.Column("chat_id", sa.BigInteger(), nullable=False),
        sa.Column("user_id", sa.BigInteger()),
        sa.Column("username", sa.String(length=64)),
        sa.Column("active", sa.Boolean(), server_default=sa.true(), nullable=False),
        sa.Column("inactive_reason", sa.Text()),
        sa.Column("muted_until", Time),
        sa.Column("digest", sa.String(length=100)),
        sa.Column("created_at", Time, nullable=False),
        sa.Column("updated_at", Time, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_subscribers"),
        sa.UniqueConstraint("chat_id", name="uq_subscribers_chat_id"),
    )
    op.create_table(
        "subscriptions",
        sa.Column("subscriber_id", Id, nullable=False),
        sa.Column("watchlist", sa.String(length=200), nullable=False),
        sa.Column("created_at", Time, nullable=False),
        sa.ForeignKeyConstraint(
            ["subscriber_id"], ["subscribers.id"], name="fk_subscriptions_subscriber_id_subscribers"
        ),
        sa.PrimaryKeyConstraint("subscriber_id", "watchlist", name="pk_subscriptions"),
    )
    op.create_index("ix_subscriptions_watchlist", "subscriptions", ["watchlist"])


def downgrade() -> None:
    op.drop_table("subscriptions")
    op.drop_table("subscribers")
