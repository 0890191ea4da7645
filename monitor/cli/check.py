"""`monitor check`: validate the config and print its summary (exit 0), or list every problem
(exit 2). Beyond validity it reports what the config package's `advice` finds: warnings (exit
0 all the same) and errors where the config surely cannot work (exit 2). The checks and the
summary are the config package's; this module only prints.
"""

from __future__ import annotations

import typer
from rich.markup import escape

from monitor.cli.app import EXIT_USAGE, load_settings, stderr


def _count(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def check(ctx: typer.Context) -> None:
    """Validate the config and list every problem.

    Every error, with file, line and key (exit 2), or a summary of the config (exit 0); errors
    where a valid config cannot work (a feed the fetch rules refuse, an SQLite database whose
    folder is missing or read-only); and warnings about what is valid but most likely wrong: a
    missing local feed file, a channel no watchlist notifies, a lower-case and/or/not in a query.
    """
    from monitor.config import summary
    from monitor.config.advice import advise

    settings = load_settings(ctx)
    findings = advise(settings)
    errors = sum(finding.error for finding in findings)
    warnings = len(findings) - errors
    if not errors:
        typer.echo(summary(settings))
    for finding in findings:
        label = "[red]error:[/red]" if finding.error else "[yellow]warning:[/yellow]"
        stderr.print(f"{label} {escape(str(finding.problem))}")
    if errors:
        also = f" and {_count(warnings, 'warning')}" if warnings else ""
        stderr.print(f"{_count(errors, 'problem')}{also} in {escape(str(ctx.obj.config))}")
        raise typer.Exit(EXIT_USAGE)
    typer.echo(f"{ctx.obj.config}: OK" + (f" ({_count(warnings, 'warning')})" if warnings else ""))
