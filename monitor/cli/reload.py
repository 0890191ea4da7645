"""`monitor reload`: make the running `monitor run` read its config again.

The service is found through its health port (`service.listen` of the config): the command checks
the file first (a file with problems is not sent for: they are printed, exit 2), then asks the
service on that port, over loopback, to reload (`POST /-/reload`), and prints what it did. SIGHUP
to the service's process does the same, without an answer (`systemctl reload` sends it).
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import typer
from rich.markup import escape

from monitor.cli.app import EXIT_FAILURE, EXIT_USAGE, count, fail, load_settings, stderr

RELOAD_TIMEOUT_SECONDS = 60.0


def reload(ctx: typer.Context) -> None:
    """Make the running service read its config again.

    Checks the config, then asks the `monitor run` listening on service.listen to reload it: new
    feeds are polled at once, removed ones stop, watchlists, entities, channels and the fetch
    settings change, and polls and deliveries under way finish. Prints what changed. Exit 2 when
    the config has problems (the service keeps its own), 1 when no service answers.

    \b
    Examples:
      monitor reload
      monitor reload --config /etc/news-monitor/config.yaml
    """
    settings = load_settings(ctx)
    listen = settings.service.listen
    if not listen:
        raise fail(
            "service.listen is null, so the running service cannot be reached: send it SIGHUP "
            "instead (kill -HUP PID, or systemctl reload news-monitor)",
            EXIT_USAGE,
        )
    url = f"http://{_loopback(listen)}/-/reload"
    request = urllib.request.Request(url, method="POST", data=b"")
    try:
        with urllib.request.urlopen(request, timeout=RELOAD_TIMEOUT_SECONDS) as response:
            answer = json.loads(response.read())
    except urllib.error.HTTPError as exc:
        try:
            answer = json.loads(exc.read())
        except ValueError:
            raise fail(f"the service on {listen} answered HTTP {exc.code}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise fail(
            f"no monitor service answers on {listen} (service.listen): {reason}; is `monitor "
            "run` running with this config?"
        ) from None
    if answer.get("status") == "invalid":
        for problem in answer.get("problems", []):
            stderr.print(f"[red]error:[/red] {escape(problem)}")
        stderr.print("not reloaded: the service keeps the config it has")
        raise typer.Exit(EXIT_USAGE)
    if answer.get("status") != "reloaded":
        problems = "; ".join(answer.get("problems", [])) or answer.get("status", "?")
        raise fail(f"not reloaded: {problems}", EXIT_FAILURE)
    added, removed = answer["feeds_added"], answer["feeds_removed"]
    line = (
        f"reloaded: {count(answer['feeds'], 'feed')}"
        + (f" ({len(added)} new: {', '.join(added)})" if added else "")
        + (f" ({len(removed)} removed: {', '.join(removed)})" if removed else "")
        + f", {count(answer['watchlists'], 'watchlist')}, {count(answer['channels'], 'channel')}"
    )
    typer.echo(line)
    if answer["needs_restart"]:
        sections = ", ".join(answer["needs_restart"])
        stderr.print(
            f"warning: {escape(sections)} changed: a restart applies "
            f"{'them' if ',' in sections else 'it'}; the service runs with the old values"
        )


def _loopback(listen: str) -> str:
    """The address to reach a service listening on `listen` from this machine."""
    host, _, port = listen.rpartition(":")
    host = host.strip("[]")
    if host in ("", "0.0.0.0"):
        host = "127.0.0.1"
    elif host == "::":
        host = "[::1]"
    elif ":" in host:
        host = f"[{host}]"
    return f"{host}:{port}"
