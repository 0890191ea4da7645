"""The Alembic environment: migrate on the connection `monitor.store.db.upgrade` hands over.

Run from the `alembic` command line (new revisions in a checkout), it opens `sqlalchemy.url` with
`make_engine`. Revisions describe columns with plain SQLAlchemy types (see `_render_item`), so an old
revision never breaks when `tables.py` changes.
"""

from __future__ import annotations

from typing import Any, Literal

from alembic import context
from alembic.autogenerate.api import AutogenContext
from sqlalchemy import Connection

from monitor.store.db import make_engine
from monitor.store.tables import CleanString, CleanText, UTCDateTime, metadata


def _render_item(kind: str, obj: Any, autogen_context: AutogenContext) -> str | Literal[False]:
    if kind == "type" and isinstance(obj, CleanText):
        return "sa.Text()"
    if kind == "type" and isinstance(obj, CleanString):
        return f"sa.String(length={getattr(obj.impl_instance, 'length', None)})"
    if kind == "type" and isinstance(obj, UTCDateTime):
        return "sa.DateTime(timezone=True)"
    return False


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        render_as_batch=connection.dialect.name == "sqlite",  # SQLite alters tables by copying
        render_item=_render_item,
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def main() -> None:
    config = context.config
    if context.is_offline_mode():
        context.configure(
            url=config.get_main_option("sqlalchemy.url"),
            target_metadata=metadata,
            literal_binds=True,
            render_item=_render_item,
        )
        with context.begin_transaction():
            context.run_migrations()
        return
    connection = config.attributes.get("connection")
    if isinstance(connection, Connection):
        _run(connection)
        return
    url = config.get_main_option("sqlalchemy.url")
    if not url:
        raise RuntimeError("set sqlalchemy.url, or migrate with monitor.store.db.upgrade()")
    engine = make_engine(url)
    try:
        with engine.begin() as own:
            _run(own)
    finally:
        engine.dispose()


main()
