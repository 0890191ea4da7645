"""Where the SQLite database is, and where monitor used to look for it.

A relative `sqlite:///PATH` is relative to the config file's folder (see `DatabaseSettings`). It
used to be relative to the working directory, so a cron job started in `$HOME` made a second,
empty database beside the first and sent every alert again. `old_database_location` finds a
database left at the old place, so that the commands refuse to start a new one (exit 2) and
`monitor check` warns, naming both paths.

This module only looks at the file system; it opens no database.
"""

from __future__ import annotations

from pathlib import Path

from monitor.config.schema import Settings


def old_database_location(settings: Settings, cwd: Path | None = None) -> Path | None:
    """The database at the path the config wrote, taken relative to `cwd` (the working directory)
    — when there is one there and none at the configured place; else None."""
    relative = settings.relative_database_path
    if relative is None:
        return None
    configured = settings.config_dir / relative
    old = (cwd or Path.cwd()) / relative
    if configured.exists() or not old.is_file() or old.resolve() == configured.resolve():
        return None
    return old


def database_moved_message(settings: Settings, old: Path) -> str:
    """What to tell the user about a database found at its old location."""
    configured = settings.config_dir / (settings.relative_database_path or "")
    return (
        f"database.url sqlite:///{settings.relative_database_path} is relative to the config "
        f"file, so the database is {configured}, which does not exist; but there is one at "
        f"{old}, relative to the working directory as monitor used to read it: move that file "
        "(with its -wal and -shm files) next to the config file, or write its absolute path "
        "in database.url"
    )
