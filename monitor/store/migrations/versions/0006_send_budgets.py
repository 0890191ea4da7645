"""Telegram's sending limits shared by replicas: a grid of booked send ticks, and each chat's hold.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-03
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | Sequence[str] | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "send_slots",
        sa.Column("tick", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("chat_id", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("tick", name="pk_send_slots"),
    )
    op.create_index("ix_send_slots_chat_id_tick", "send_slots", ["chat_id", "tick"])
    op.create_table(
        "send_chats",
        sa.Column("chat_id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("held_until", sa.DateTime(timezone=True)),
        sa.PrimaryKeyConstraint("chat_id", name="pk_send_chats"),
    )


def downgrade() -> None:
    op.drop_table("send_chats")
    op.drop_table("send_slots")
