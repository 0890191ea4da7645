"""`monitor stories`: the recent stories, newest first, each with its sources (the items that joined
it) and the alerts it sent; `--json` prints one object per story, one per line. It reads the
database and changes nothing.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Any

import typer

from monitor.cli.app import EXIT_USAGE, fail, fail_with, iso, load_settings, open_database

if TYPE_CHECKING:
    from monitor.store.story_report import StorySummary


def stories(
    ctx: typer.Context,
    as_json: Annotated[
        bool, typer.Option("--json", help="One JSON object per story, one per line.")
    ] = False,
    since: Annotated[
        str,
        typer.Option(
            "--since", metavar="AGE", help="Stories first seen this long ago or since: 2h, 3d."
        ),
    ] = "3d",
) -> None:
    """List recent stories with their sources and alerts.

    The stories first seen in the window, newest first: each with its title, when it was first
    seen, how many alerts it sent and one line per source.

    \b
    Examples:
      monitor stories --since 1d
      monitor stories --json | jq -r '.title'
    """
    from monitor.durations import parse_duration
    from monitor.errors import MonitorError
    from monitor.store import db
    from monitor.store.story_report import recent_stories

    settings = load_settings(ctx)
    try:
        window = parse_duration(since)
    except ValueError as exc:
        raise fail(f"--since: {exc}", EXIT_USAGE) from None
    cutoff = datetime.now(UTC) - window
    engine = open_database(settings)
    try:
        try:
            with db.read_session(engine) as session:
                found = recent_stories(session, cutoff)
        finally:
            engine.dispose()
    except MonitorError as exc:
        raise fail_with(exc) from None
    if as_json:
        for story in found:
            typer.echo(json.dumps(story_json(story), ensure_ascii=False))
        return
    for story in found:
        typer.echo("\n".join(story_lines(story)) + "\n")
    count = len(found)
    typer.echo(
        f"{count} stor{'y' if count == 1 else 'ies'} first seen since {cutoff:%Y-%m-%d %H:%M} UTC"
    )


def story_json(story: StorySummary) -> dict[str, Any]:
    return {
        "story": story.id,
        "title": story.title,
        "first_seen": iso(story.first_seen),
        "items": [
            {"feed": i.feed, "title": i.title, "link": i.link, "published": iso(i.published)}
            for i in story.items
        ],
        "alerts": story.alerts_sent,
    }


def story_lines(story: StorySummary) -> list[str]:
    """A story as text: a header, its title, then one line per item (with the item's own title
    when it is not the story's)."""
    sent = story.alerts_sent
    lines = [
        f"story {story.id} · first seen {story.first_seen:%Y-%m-%d %H:%M} UTC · "
        f"{sent} alert{'' if sent == 1 else 's'} sent",
        f"  {_one_line(story.title) or '(no title)'}",
    ]
    for item in story.items:
        parts = [item.feed]
        if item.published is not None:
            parts.append(f"{item.published.astimezone(UTC):%Y-%m-%d %H:%M} UTC")
        if item.title != story.title:
            parts.append(_one_line(item.title) or "(no title)")
        if item.link:
            parts.append(_one_line(item.link))
        lines.append("  - " + " · ".join(parts))
    return lines


def _one_line(text: str) -> str:
    """Feed text on one line, without control characters (they could move the cursor)."""
    return " ".join("".join(c if c.isprintable() else " " for c in text).split())
