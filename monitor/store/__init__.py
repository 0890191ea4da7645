"""Storage: the only package that knows SQL (SPEC §8).

* `db` — engines (SQLite in WAL with BEGIN IMMEDIATE for writes; PostgreSQL), one transaction per
  unit of work, and the schema version (Alembic migrations shipped in `migrations/`).
* `tables` — the schema as SQLAlchemy Core tables.
* `feeds`, `stories`, `alerts`, `subscribers` — the queries, one module per concept (feeds and
  their leases; items and stories; matches and the alert outbox; Telegram subscribers), as
  functions of a Session that never commit and return frozen dataclasses. `_shared` holds what
  they share (dialect, race-safe insert, the database clock).

Typical use::

    engine = make_engine(settings.database.url)
    ensure_schema(engine, upgrade=True)
    with transaction(engine) as session:
        claimed = claim_due_feeds(session, owner, timedelta(minutes=5), limit=50)
"""

from monitor.store.db import (
    current_revision,
    ensure_schema,
    head_revision,
    make_engine,
    read_session,
    transaction,
    upgrade,
)

__all__ = [
    "current_revision",
    "ensure_schema",
    "head_revision",
    "make_engine",
    "read_session",
    "transaction",
    "upgrade",
]
