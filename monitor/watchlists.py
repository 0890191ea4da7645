"""From validated settings to the compiled matcher: the one place that joins config and core."""

from __future__ import annotations

from monitor.config import Settings
from monitor.core.match import Matcher, WatchlistRule


def compile_watchlists(settings: Settings) -> Matcher:
    """Compile every watchlist of the config, with its entities, into one Matcher."""
    rules = [
        WatchlistRule(w.name, w.query, tuple(w.languages), tuple(w.feeds))
        for w in settings.watchlists.values()
    ]
    entities = {name: list(entity.aliases) for name, entity in settings.entities.items()}
    return Matcher.compile(rules, entities)
