"""Recent stories as `monitor stories` reports them: each story with its items (one per source and
version) and how many alerts it sent.

Functions take a Session and never commit. Grouping items into stories is `core.stories` and
`store.stories`' job; this module only reads.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from monitor.store.tables import alerts, feeds, items, stories

__all__ = ["StoryItem", "StorySummary", "recent_stories"]


@dataclass(frozen=True, slots=True)
class StoryItem:
    """One item of a story: its feed, title, link and the date its feed gave it."""

    feed: str
    title: str
    link: str | None
    published: datetime | None


@dataclass(frozen=True, slots=True)
class StorySummary:
    """A story: its id, title (its first item's), when it was first seen, its items in the order
    they arrived, and how many alerts it sent (to every watchlist and recipient together)."""

    id: int
    title: str
    first_seen: datetime
    items: tuple[StoryItem, ...]
    alerts_sent: int


def recent_stories(session: Session, since: datetime) -> list[StorySummary]:
    """The stories first seen at or after `since`, newest first (stories left without items by
    retention are left out)."""
    recent = select(stories.c.id).where(stories.c.created_at >= since).subquery()
    rows = session.execute(
        select(
            items.c.story_id,
            stories.c.created_at,
            feeds.c.name,
            items.c.title,
            items.c.link,
            items.c.published_at,
        )
        .join(stories, stories.c.id == items.c.story_id)
        .join(feeds, feeds.c.id == items.c.feed_id)
        .where(items.c.story_id.in_(select(recent.c.id)))
        .order_by(items.c.story_id, items.c.fetched_at, items.c.id)
    ).all()
    sent: dict[int, int] = {
        story_id: count
        for story_id, count in session.execute(
            select(alerts.c.story_id, func.count())
            .where(alerts.c.story_id.in_(select(recent.c.id)), alerts.c.status == "sent")
            .group_by(alerts.c.story_id)
        )
    }
    grouped: dict[int, tuple[datetime, list[StoryItem]]] = {}
    for row in rows:
        _, found = grouped.setdefault(row.story_id, (row.created_at, []))
        found.append(StoryItem(row.name, row.title, row.link, row.published_at))
    summaries = [
        StorySummary(story_id, found[0].title, first_seen, tuple(found), sent.get(story_id, 0))
        for story_id, (first_seen, found) in grouped.items()
    ]
    return sorted(summaries, key=lambda s: (s.first_seen, s.id), reverse=True)
