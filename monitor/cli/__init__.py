"""The `monitor` command line and the composition root: the only code that reads the config file;
it builds the matcher, the HTTP policy and the service, and passes plain values down.

`app` (in `monitor.cli.app`, with the common options and config loading) gets its commands here, in
the order `monitor --help` lists them; each command is its own module. `main` is the console
script; `python -m monitor.cli` runs it too.
"""

from monitor.cli import (
    backtest,
    check,
    database,
    feeds,
    match,
    reload,
    run,
    send_test,
    stories,
    subscribers,
)
from monitor.cli.app import app, main

app.command()(check.check)
app.command()(match.match)
app.command()(run.once)
app.command()(run.run)
app.command()(reload.reload)
app.command()(feeds.feeds)
app.command()(backtest.backtest)
app.command()(stories.stories)
app.command("send-test")(send_test.send_test)
app.add_typer(subscribers.subscribers_app, name="subscribers")
app.add_typer(database.db_app, name="db")

__all__ = ["app", "main"]
