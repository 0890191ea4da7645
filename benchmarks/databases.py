"""A fresh, empty database for one benchmark run: a SQLite file in a temporary folder, or a
PostgreSQL schema of its own on a server (dropped afterwards), as the tests make them."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def fresh_database(kind: str, tmp: Path, postgresql: str | None, name: str) -> Iterator[str]:
    """The URL of an empty database of `kind` ("sqlite" or "postgresql", any case): a file
    `NAME-….db` in `tmp`, or a schema `NAME_…` on the server `postgresql`, dropped at the end."""
    if kind.lower() == "sqlite":
        yield f"sqlite:///{tmp / f'{name}-{uuid.uuid4().hex[:8]}.db'}"
        return
    from sqlalchemy import text
    from sqlalchemy.engine import make_url

    from monitor.store.db import make_engine

    assert postgresql is not None
    schema = f"{name}_{uuid.uuid4().hex[:12]}"
    admin = make_engine(postgresql).execution_options(isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            connection.execute(text(f'CREATE SCHEMA "{schema}"'))
        url = make_url(postgresql).update_query_dict({"options": f"-csearch_path={schema}"})
        try:
            yield url.render_as_string(hide_password=False)
        finally:
            with admin.connect() as connection:
                connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
    finally:
        admin.engine.dispose()
