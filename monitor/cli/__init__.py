"""The `monitor` command line and the composition root: the only code that reads the config file;
it builds the matcher, the HTTP policy and the service, and passes plain values down.

`app` (in `monitor.cli.app`, with the common options and config loading) gets its commands here, in
the order `monitor --help` lists them; each command is its own module. `main` is the console
script; `python -m monitor.cli` runs it too.
"""

from collections.abc import Callable
from typing import Any

from monitor.cli import (
    alerts,
    backtest,
    check,
    database,
    feeds,
    match,
    opml,
    reload,
    run,
    send_test,
    stories,
    subscribers,
)
from monitor.cli.app import MonitorCommand, app, config_after_command, main


def _command(function: Callable[..., Any], name: str | None = None, **settings: Any) -> None:
    app.command(name, cls=MonitorCommand, **settings)(config_after_command(function))


_command(
    check.check,
    short_help="Validate the config and list every problem.",
    epilog="""\b
    Examples:
      monitor check
      monitor check --config /etc/news-monitor/config.yaml
    """,
)
_command(match.match)
_command(run.once)
_command(run.run)
_command(reload.reload)
_command(feeds.feeds)
_command(alerts.alerts)
_command(backtest.backtest)
_command(stories.stories)
_command(send_test.send_test, "send-test")
app.add_typer(subscribers.subscribers_app, name="subscribers")
app.add_typer(database.db_app, name="db")
app.add_typer(opml.opml_app, name="opml")

__all__ = ["app", "main"]
