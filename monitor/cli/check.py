"""`monitor check`: validate the config and print its summary (exit 0), or list every problem
(exit 2). The checks and the summary are the config package's; this module only prints.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import typer

from monitor.cli.app import load_settings

if TYPE_CHECKING:
    pass


def check(ctx: typer.Context) -> None:
    """Validate the config: list every error (exit 2) or print a summary (exit 0)."""
    from monitor.config import summary

    settings = load_settings(ctx)
    typer.echo(summary(settings))
    typer.echo(f"{ctx.obj.config}: OK")
