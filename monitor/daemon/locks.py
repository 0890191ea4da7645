"""One process per SQLite database: the `<database>.lock` file that `monitor run` and `monitor once`
hold. PostgreSQL needs no such lock: replicas share the work through row leases."""

from __future__ import annotations

import contextlib
import fcntl
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from monitor.errors import DatabaseLocationError, MonitorError
from monitor.store.db import check_sqlite_location, sqlite_file


class AlreadyRunningError(MonitorError):
    """Another monitor process holds this SQLite database's lock file."""


@contextlib.contextmanager
def sqlite_lock(database_url: str) -> Iterator[bool]:
    """On SQLite, one process at a time: an exclusive lock on `<database>.lock`; yields True when
    held. PostgreSQL needs none (replicas share the work through row leases): yields False.

    A database folder that is missing or read-only is refused first (DatabaseLocationError), with
    the same message as the database itself would get."""
    database = sqlite_file(database_url)
    if database is None:
        yield False
        return
    check_sqlite_location(database, create=True)
    path = Path(f"{database}.lock")
    try:
        handle: IO[str] = path.open("a")
    except OSError as exc:
        raise DatabaseLocationError(
            f"cannot create the lock file {path}: {exc.strerror or exc}"
        ) from None
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise AlreadyRunningError(
                f"another monitor is already running on {database} (lock file {path})"
            ) from None
        yield True
    finally:
        handle.close()
