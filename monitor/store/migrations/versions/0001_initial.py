"""The first schema: feeds with poll state and leases, stories, items, matches, the alert outbox.

Revision ID: 0001
Revises:
Create Date: 2025-11-26
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# 64-bit keys on PostgreSQL; INTEGER PRIMARY KEY (the rowid) on SQLite.
Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
Time = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "feeds",
        sa.Column("id", Id, nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("url", sa.Text(), nullable=False),
        sa.Column("active", sa.Boolean(), server_default=sa.true(), nullable=False),
        sa.Column("etag", sa.Text()),
        sa.Column("last_modified", sa.Text()),
        sa.Column("body_hash", sa.String(length=64)),
        sa.Column("last_polled_at", Time),
        sa.Column("last_status", sa.String(length=20)),
        sa.Column("last_error", sa.Text()),
        sa.Column("last_new_items", sa.Integer()),
        sa.Column(
            "consecutive_failures", sa.Integer(), server_default=sa.text("0"), nullable=False
        ),
        sa.Column("next_poll_at", Time, nullable=False),
        sa.Column("lease_owner", sa.String(length=200)),
        sa.Column("lease_until", Time),
        sa.Column("created_at", Time, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_feeds"),
        sa.UniqueConstraint("name", name="uq_feeds_name"),
    )
    op.create_index("ix_feeds_next_poll_at", "feeds", ["next_poll_at"])

    op.create_table(
        "stories",
        sa.Column("id", Id, nullable=False),
        sa.Column("content_hash", sa.String(length=128), nullable=False),
        sa.Column("created_at", Time, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_stories"),
        sa.UniqueConstraint("content_hash", name="uq_stories_content_hash"),
    )

    op.create_table(
        "items",
        sa.Column("id", Id, nullable=False),
        sa.Column("feed_id", Id, nullable=False),
        sa.Column("identity", sa.Text(), nullable=False),
        sa.Column("content_hash", sa.String(length=128), nullable=False),
        sa.Column("hash_version", sa.SmallInteger(), nullable=False),
        sa.Column("title", sa.Text(), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("html", sa.Text()),
        sa.Column("link", sa.Text()),
        sa.Column("author", sa.Text()),
        sa.Column("published_at", Time),
        sa.Column("language", sa.String(length=35)),
        sa.Column("fetched_at", Time, nullable=False),
        sa.Column("updated_at", Time),
        sa.Column("story_id", Id, nullable=False),
        sa.ForeignKeyConstraint(["feed_id"], ["feeds.id"], name="fk_items_feed_id_feeds"),
        sa.ForeignKeyConstraint(["story_id"], ["stories.id"], name="fk_items_story_id_stories"),
        sa.PrimaryKeyConstraint("id", name="pk_items"),
        sa.UniqueConstraint("feed_id", "identity", name="uq_items_feed_id_identity"),
    )
    op.create_index("ix_items_content_hash", "items", ["content_hash"])
    op.create_index("ix_items_fetched_at", "items", ["fetched_at"])
    op.create_index("ix_items_story_id", "items", ["story_id"])

    op.create_table(
        "matches",
        sa.Column("id", Id, nullable=False),
        sa.Column("story_id", Id, nullable=False),
        sa.Column("item_id", Id, nullable=False),
        sa.Column("watchlist", sa.String(length=200), nullable=False),
        sa.Column("hits", sa.Text(), nullable=False),
        sa.Column("created_at", Time, nullable=False),
        sa.ForeignKeyConstraint(["item_id"], ["items.id"], name="fk_matches_item_id_items"),
        sa.ForeignKeyConstraint(["story_id"], ["stories.id"], name="fk_matches_story_id_stories"),
        sa.PrimaryKeyConstraint("id", name="pk_matches"),
        sa.UniqueConstraint("story_id", "watchlist", name="uq_matches_story_id_watchlist"),
    )
    op.create_index("ix_matches_item_id", "matches", ["item_id"])

    op.create_table(
        "alerts",
        sa.Column("id", Id, nullable=False),
        sa.Column("story_id", Id, nullable=False),
        sa.Column("item_id", Id, nullable=False),
        sa.Column("watchlist", sa.String(length=200), nullable=False),
        sa.Column("channel", sa.String(length=200), nullable=False),
        sa.Column("recipient", sa.String(length=320), server_default="", nullable=False),
        sa.Column("status", sa.String(length=10), server_default="pending", nullable=False),
        sa.Column("attempts", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("next_attempt_at", Time, nullable=False),
        sa.Column("last_error", sa.Text()),
        sa.Column("lease_owner", sa.String(length=200)),
        sa.Column("lease_until", Time),
        sa.Column("sent_at", Time),
        sa.Column("created_at", Time, nullable=False),
        sa.CheckConstraint("status IN ('pending', 'sent', 'failed')", name="ck_alerts_status"),
        sa.ForeignKeyConstraint(["item_id"], ["items.id"], name="fk_alerts_item_id_items"),
        sa.ForeignKeyConstraint(["story_id"], ["stories.id"], name="fk_alerts_story_id_stories"),
        sa.PrimaryKeyConstraint("id", name="pk_alerts"),
        sa.UniqueConstraint(
            "story_id",
            "watchlist",
            "channel",
            "recipient",
            name="uq_alerts_story_id_watchlist_channel_recipient",
        ),
    )
    op.create_index("ix_alerts_item_id", "alerts", ["item_id"])
    op.create_index("ix_alerts_status_next_attempt_at", "alerts", ["status", "next_attempt_at"])


def downgrade() -> None:
    for table in ("alerts", "matches", "items", "stories", "feeds"):
        op.drop_table(table)
