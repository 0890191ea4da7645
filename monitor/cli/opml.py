"""`monitor opml import FILE [--write]` and `monitor opml export`: feeds from and to the OPML
subscription lists that feed readers exchange.

Which outlines become which feeds is `monitor.core.opml`'s; how the entries are added to the config
file without touching the rest is `monitor.config.edit`'s. This module reads and writes the files
and reports.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from monitor.cli.app import (
    EXIT_USAGE,
    MonitorCommand,
    config_after_command,
    fail,
    load_settings,
    stderr,
)

opml_app = typer.Typer(
    help="""Import feeds from an OPML list, or export them as OPML.

    \b
    Examples:
      monitor opml import subscriptions.opml
      monitor opml export > feeds.opml
    """,
    no_args_is_help=True,
)


def _names(names: Iterable[str]) -> str:
    listed = list(names)
    return ", ".join(listed[:5]) + (", …" if len(listed) > 5 else "")


def _feeds(count: int) -> str:
    return f"{count} feed{'' if count == 1 else 's'}"


@opml_app.command("import", cls=MonitorCommand)
@config_after_command
def import_feeds(
    ctx: typer.Context,
    file: Annotated[Path, typer.Argument(help="The OPML file, e.g. exported by a feed reader.")],
    write: Annotated[
        bool,
        typer.Option(
            "--write", help="Add the new feeds to the config file instead of printing them."
        ),
    ] = False,
) -> None:
    """Print the feeds of an OPML file that the config does not have yet.

    They are printed as entries for the config's feeds: list; with --write they are added to the
    config file after its last feed, every other line, comment and blank line staying as it was.
    Feeds already configured (same URL) are skipped. A running service takes new feeds on
    monitor reload.

    \b
    Examples:
      monitor opml import subscriptions.opml
      monitor opml import subscriptions.opml --write --config /etc/news-monitor/config.yaml
    """
    from monitor.config import parse_config
    from monitor.config.edit import EditError, add_feeds, feed_entries
    from monitor.core.opml import ConfiguredFeed, OpmlError, plan_import, read_opml
    from monitor.errors import ConfigError

    settings = load_settings(ctx)
    try:
        outlines = read_opml(file.read_bytes())
    except OSError as exc:
        raise fail(f"cannot read {file}: {exc.strerror or exc}") from None
    except OpmlError as exc:
        raise fail(f"{file}: {exc}") from None
    configured = [ConfiguredFeed(feed.name, feed.url) for feed in settings.all_feeds]
    plan = plan_import(outlines, configured)
    if plan.already_configured:
        names = _names(plan.already_configured)
        stderr.print(f"{_feeds(len(plan.already_configured))} already configured: {escape(names)}")
    if plan.repeated:
        stderr.print(f"{_feeds(plan.repeated)} listed twice in {escape(str(file))}: taken once")
    for url in plan.not_http:
        stderr.print(f"skipped {escape(url)}: not an http(s) URL")
    if not plan.feeds:
        stderr.print("nothing to add")
        return
    config: Path = ctx.obj.config
    if not write:
        typer.echo(feed_entries(plan.feeds), nl=False)
        stderr.print(
            f"{_feeds(len(plan.feeds))} to add: put the lines above under feeds: in "
            f"{escape(str(config))}, or run again with --write"
        )
        return
    target = config.resolve()
    raw = target.read_bytes()
    bom = "\ufeff" if raw.startswith(b"\xef\xbb\xbf") else ""
    text = raw.decode("utf-8-sig")
    try:
        updated = add_feeds(text, plan.feeds)
        after = parse_config(updated, str(config))
    except EditError as exc:
        raise fail(f"{config}: {exc}; nothing was written", EXIT_USAGE) from None
    except ConfigError as exc:  # would not happen; but never write a file that does not load
        raise fail(f"the file would not load: {exc.problems[0]}; nothing was written") from None
    expected = [feed.name for feed in settings.all_feeds] + [feed.name for feed in plan.feeds]
    if [feed.name for feed in after.all_feeds] != expected:
        raise fail(f"{config}: the feeds would not come out as meant; nothing was written")
    _replace(target, bom + updated)
    added = _names(feed.name for feed in plan.feeds)
    stderr.print(
        f"added {_feeds(len(plan.feeds))} to {escape(str(config))}: {escape(added)}; a running "
        "service takes them on `monitor reload`"
    )


@opml_app.command("export", cls=MonitorCommand)
@config_after_command
def export_feeds(ctx: typer.Context) -> None:
    """Print the configured feeds as an OPML 2.0 subscription list.

    For a feed reader or another monitor. Every http(s) feed of the config is listed, disabled
    ones too; local feed files are left out.

    \b
    Example:
      monitor opml export > feeds.opml
    """
    from monitor.core.opml import ConfiguredFeed, export_opml

    settings = load_settings(ctx)
    feeds = [ConfiguredFeed(f.name, f.url, f.language) for f in settings.all_feeds]
    typer.echo(export_opml(feeds), nl=False)
    local = [f for f in settings.all_feeds if not f.url.startswith(("http://", "https://"))]
    if local:
        names = _names(feed.name for feed in local)
        stderr.print(f"left out {len(local)} local feed file(s): {escape(names)}")


def _replace(path: Path, text: str) -> None:
    """Write `text` to `path` at once: a reader sees the old file or the new one, never half."""
    mode = path.stat().st_mode & 0o7777
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(handle, "w", encoding="utf-8", newline="") as out:
            out.write(text)
        os.chmod(temporary, mode)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
