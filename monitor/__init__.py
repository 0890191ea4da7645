"""news-monitor: watch news feeds, match watchlists in every language, alert people."""

__version__ = "0.1.0"
