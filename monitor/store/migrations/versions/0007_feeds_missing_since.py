"""Feeds gone for good: when a feed's 404/410 answers began (`fetch.gone_after` later it is gone).

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-03
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | Sequence[str] | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("feeds") as batch:
        batch.add_column(sa.Column("missing_since", sa.DateTime(timezone=True)))


def downgrade() -> None:
    with op.batch_alter_table("feeds") as batch:
        batch.drop_column("missing_since")
