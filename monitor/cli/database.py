"""`monitor db …`: database maintenance; `monitor db upgrade` applies the schema migrations. The
migrations themselves are `monitor.store`'s.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import typer

from monitor.cli.app import (
    MonitorCommand,
    MonitorGroup,
    config_after_command,
    fail_with,
    load_settings,
    refuse_moved_database,
)

if TYPE_CHECKING:
    pass

db_app = typer.Typer(
    cls=MonitorGroup,
    help="""Database maintenance.

    \b
    Example:
      monitor db upgrade
    """,
    no_args_is_help=True,
)


@db_app.command("upgrade", cls=MonitorCommand)
@config_after_command
def db_upgrade(ctx: typer.Context) -> None:
    """Apply the schema migrations.

    run and once do this by themselves; a database newer than this monitor is refused.

    \b
    Example:
      monitor db upgrade --config /etc/news-monitor/config.yaml
    """
    from monitor.errors import MonitorError
    from monitor.store import db

    settings = load_settings(ctx)
    refuse_moved_database(settings)
    try:
        engine = db.make_engine(settings.database.url)
        try:
            before, after = db.upgrade(engine)
        finally:
            engine.dispose()
    except MonitorError as exc:
        raise fail_with(exc) from None
    if before == after:
        typer.echo(f"database is up to date (revision {after})")
    else:
        typer.echo(f"database upgraded from {before or 'empty'} to revision {after}")
