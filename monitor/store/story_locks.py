"""The lock that makes replicas take turns deciding a story, and only where they could disagree.

A near-copy has no unique key to race on, as an exact copy has its content hash: two replicas
storing copies of one story at the same moment would each find no story and make one. A copy is
found by the indexed hashes of its fingerprint (`core.stories.INDEXED`), or by the word pairs of
its headline (`core.headlines.title_keys`), both looked up in `story_hashes`, and two
items can only be decided into one story if they share one of those keys. So a transaction locks each indexed hash of the items it decides, on PostgreSQL with a
transaction-scoped advisory lock per hash: the second of two copies waits for the first to commit
and then sees its story, while transactions about unrelated stories share no key and never wait
for each other. On SQLite the write transaction is already exclusive.
"""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import text
from sqlalchemy.orm import Session

from monitor.store._shared import dialect

# One statement whatever the number of keys. The locks are taken in ascending order, so two
# transactions wanting overlapping keys cannot each hold one the other waits for: PostgreSQL
# evaluates a volatile function of the select list after the ORDER BY sort, row by row.
_LOCK_IN_ORDER = text(
    "SELECT pg_advisory_xact_lock(k) FROM unnest(CAST(:keys AS bigint[])) AS k ORDER BY k"
)


def lock_stories(session: Session, hashes: Iterable[int]) -> None:
    """Wait until no other transaction is deciding a story by one of `hashes` (the indexed hashes
    of the fingerprints of the items this one decides), and keep them until this one ends.

    Take it before the transaction's first write: waiting for it while holding row locks could
    deadlock with its holder."""
    keys = sorted(set(hashes))
    if keys and dialect(session) == "postgresql":
        session.execute(_LOCK_IN_ORDER, {"keys": keys})
