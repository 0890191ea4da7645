"""Leadership of replicas: one row per role that one replica plays at a time, under a lease.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-03
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

Time = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "leadership",
        sa.Column("role", sa.String(50), nullable=False),
        sa.Column("holder", sa.String(200)),
        sa.Column("term", sa.BigInteger(), nullable=False, server_default=sa.text("0")),
        sa.Column("acquired_at", Time),
        sa.Column("expires_at", Time, nullable=False),
        sa.PrimaryKeyConstraint("role", name="pk_leadership"),
    )


def downgrade() -> None:
    op.drop_table("leadership")
