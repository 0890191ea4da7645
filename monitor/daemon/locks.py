"""One process per SQLite database: the `<database>.lock` file that `monitor run` and `monitor once`
hold. PostgreSQL needs no such lock: replicas share the work through row leases."""

from __future__ import annotations

import contextlib
import fcntl
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from sqlalchemy.engine import make_url

from monitor.errors import MonitorError


class AlreadyRunningError(MonitorError):
    """Another monitor process holds this SQLite database's lock file."""


@contextlib.contextmanager
def sqlite_lock(database_url: str) -> Iterator[bool]:
    """On SQLite, one process at a time: an exclusive lock on `<database>.lock`; yields True when
    held. PostgreSQL needs none (replicas share the work through row leases): yields False."""
    url = make_url(database_url)
    if not url.drivername.startswith("sqlite") or url.database in (None, "", ":memory:"):
        yield False
        return
    path = Path(f"{url.database}.lock")
    handle: IO[str] = path.open("a")
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise AlreadyRunningError(
                f"another monitor is already running on {url.database} (lock file {path})"
            ) from None
        yield True
    finally:
        handle.close()
