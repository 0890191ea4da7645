"""When each feed last succeeded, and since when it has been failing (`monitor feeds`).

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-03
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | Sequence[str] | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("feeds") as batch:
        batch.add_column(sa.Column("last_success_at", sa.DateTime(timezone=True)))
        batch.add_column(sa.Column("failing_since", sa.DateTime(timezone=True)))
    # What the old rows tell: a feed whose last poll did not fail succeeded then; one that fails
    # has failed since its last poll at least (the start of the run of failures is not known).
    op.execute(
        "UPDATE feeds SET last_success_at = last_polled_at "
        "WHERE consecutive_failures = 0 AND last_polled_at IS NOT NULL"
    )
    op.execute(
        "UPDATE feeds SET failing_since = last_polled_at "
        "WHERE consecutive_failures > 0 AND last_polled_at IS NOT NULL"
    )


def downgrade() -> None:
    with op.batch_alter_table("feeds") as batch:
        batch.drop_column("failing_since")
        batch.drop_column("last_success_at")
