"""What the store's query modules share: the dialect of a session, race-safe insert (`INSERT … ON
CONFLICT DO NOTHING RETURNING id`), the lease test, error truncation, the database's clock, and
PostgreSQL's array literals.

Leases and due times are judged by `database_now`, the database's clock, never the host's: replicas
on hosts whose clocks disagree still agree on who holds what. This module holds no query of any
table; `feeds`, `stories` and `alerts` do.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, cast

from sqlalchemy import (
    ARRAY,
    BigInteger,
    ColumnElement,
    CursorResult,
    Row,
    String,
    Table,
    any_,
    bindparam,
    func,
    or_,
    select,
    sql,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from monitor.errors import StoreError

MAX_ERROR_CHARS = 2000


def dialect(session: Session) -> str:
    return session.get_bind().dialect.name


def array_literal(values: Iterable[int | str | None]) -> str:
    """`values` as a PostgreSQL array literal (`{1,2}`, `{"a","b",NULL}`), one string parameter
    for a statement to cast to its array type. psycopg dumps a list element by element, sizing
    each integer: about 0.1 ms of CPU for the 12 hashes of one item's story lookup."""
    parts = (
        "NULL"
        if v is None
        else str(v)
        if isinstance(v, int)
        else '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
        for v in values
    )
    return "{" + ",".join(parts) + "}"


def takes_arrays(session: Session) -> bool:
    """Whether the database takes a list of values as one array parameter (PostgreSQL)."""
    return dialect(session) == "postgresql"


def in_id_array(column: ColumnElement[int], name: str) -> ColumnElement[bool]:
    """`column = ANY(:name::bigint[])`: `name` is one `array_literal` of ids, so the statement's
    text is the same for any number of them and PostgreSQL keeps its plan."""
    return column == any_(sql.cast(bindparam(name, type_=String()), ARRAY(BigInteger())))


def insert_ignore(
    session: Session, table: Table, values: Mapping[str, Any], conflict: Sequence[str]
) -> int | None:
    """INSERT … ON CONFLICT (conflict) DO NOTHING RETURNING id: the new id, or None if it existed."""
    name = dialect(session)
    if name == "postgresql":
        pg = postgresql.insert(table).values(values).on_conflict_do_nothing(index_elements=conflict)
        return session.execute(pg.returning(table.c.id)).scalar_one_or_none()
    if name == "sqlite":
        lite = sqlite.insert(table).values(values).on_conflict_do_nothing(index_elements=conflict)
        return session.execute(lite.returning(table.c.id)).scalar_one_or_none()
    raise StoreError(f"unsupported database {name!r}")


def insert_ignore_many(
    session: Session,
    table: Table,
    rows: Sequence[Mapping[str, Any]],
    conflict: Sequence[str],
    returning: Sequence[str],
) -> list[Row[Any]]:
    """INSERT … ON CONFLICT (conflict) DO NOTHING RETURNING `returning`, for many rows in one
    round trip (SQLAlchemy's insertmanyvalues: multi-row VALUES, in pages for very many rows):
    the rows inserted, in no particular order; those that existed are left out."""
    if not rows:
        return []
    name = dialect(session)
    columns = [table.c[column] for column in returning]
    if name == "postgresql":
        pg = postgresql.insert(table).on_conflict_do_nothing(index_elements=conflict)
        return list(session.execute(pg.returning(*columns), list(rows)))
    if name == "sqlite":
        lite = sqlite.insert(table).on_conflict_do_nothing(index_elements=conflict)
        return list(session.execute(lite.returning(*columns), list(rows)))
    raise StoreError(f"unsupported database {name!r}")


def ensure_row(
    session: Session, table: Table, values: Mapping[str, Any], conflict: Sequence[str]
) -> None:
    """INSERT … ON CONFLICT (conflict) DO NOTHING, for a table without an `id`: the row exists."""
    name = dialect(session)
    if name == "postgresql":
        pg = postgresql.insert(table).values(values).on_conflict_do_nothing(index_elements=conflict)
        session.execute(pg)
    elif name == "sqlite":
        lite = sqlite.insert(table).values(values).on_conflict_do_nothing(index_elements=conflict)
        session.execute(lite)
    else:
        raise StoreError(f"unsupported database {name!r}")


def rowcount(result: Any) -> int:
    return cast(CursorResult[Any], result).rowcount


def lease_free(table: Table, now: datetime | ColumnElement[datetime]) -> ColumnElement[bool]:
    return or_(table.c.lease_until.is_(None), table.c.lease_until <= now)


def short_error(error: str | None) -> str | None:
    if error is None or len(error) <= MAX_ERROR_CHARS:
        return error
    return error[: MAX_ERROR_CHARS - 1] + "…"


# Built once: `database_now` is read at every claim, and building a statement costs more than
# SQLite takes to run it.
_POSTGRESQL_NOW = select(func.clock_timestamp())
_SQLITE_NOW = select(func.strftime("%Y-%m-%d %H:%M:%f", "now"))


def database_now(session: Session) -> datetime:
    """The database's clock, aware UTC. Leases and due times are judged by it."""
    if dialect(session) == "postgresql":
        value = session.execute(_POSTGRESQL_NOW).scalar_one()
        return cast(datetime, value).astimezone(UTC)
    text_value = session.execute(_SQLITE_NOW).scalar_one()
    return datetime.fromisoformat(cast(str, text_value)).replace(tzinfo=UTC)
