"""Reloading the config of a running service (SIGHUP, or `monitor reload` through the health
port): read the file again, validate it, and swap what can change under a running service —
feeds, watchlists, entities, channels, the SMTP server, how feeds are fetched — without stopping
anything.

Polls and deliveries in flight go on with what they started with: a poll keeps its feed's old
settings, an alert already claimed goes out through the notifier it was claimed for. The next
claim uses the new config: a new feed is due at once, a removed one is not claimed again (its
items stay), a changed URL is polled at once. An invalid file changes nothing: the problems are
logged (`reload.invalid`, then one `reload.problem` each) and the old config stays.

Some settings belong to the process and only a restart changes them: `database`, `service`,
`telegram` (the bot's token and access rules). A reload keeps the running values of those,
logs `reload.needs_restart` naming them, and applies the rest.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from monitor.config import load_config
from monitor.errors import ConfigError, StoreError

if TYPE_CHECKING:
    from monitor.daemon.service import Service

log = logging.getLogger("monitor.daemon")

RESTART_ONLY = ("database", "service", "telegram")


@dataclass
class ReloadOutcome:
    """What a reload did: `status` is `reloaded`, `invalid` (the file has problems: nothing
    changed) or `failed` (the database could not take the new feeds: nothing changed)."""

    status: str
    problems: list[str] = field(default_factory=list)
    feeds: int = 0
    watchlists: int = 0
    channels: int = 0
    added: list[str] = field(default_factory=list)  # feeds
    removed: list[str] = field(default_factory=list)  # feeds
    needs_restart: list[str] = field(default_factory=list)  # sections kept as they were

    @property
    def ok(self) -> bool:
        return self.status == "reloaded"

    def as_json(self) -> dict[str, object]:
        return {
            "status": self.status,
            "problems": self.problems,
            "feeds": self.feeds,
            "watchlists": self.watchlists,
            "channels": self.channels,
            "feeds_added": self.added,
            "feeds_removed": self.removed,
            "needs_restart": self.needs_restart,
        }


class Reloader:
    """Reloads `service` from `config` (the file it was started with), one reload at a time."""

    def __init__(self, service: Service, config: Path) -> None:
        self.service = service
        self.config = config
        self._lock = asyncio.Lock()

    async def reload(self) -> ReloadOutcome:
        async with self._lock:
            log.info("reload.started file=%s", self.config)
            try:
                new = await asyncio.to_thread(load_config, self.config)
            except ConfigError as exc:
                problems = [str(problem) for problem in exc.problems]
                log.error(
                    "reload.invalid file=%s problems=%s: the running config stays",
                    self.config,
                    len(problems),
                )
                for problem in problems:
                    log.error("reload.problem problem=%s", problem)
                return ReloadOutcome("invalid", problems=problems)
            old = self.service.settings
            kept = [s for s in RESTART_ONLY if getattr(new, s) != getattr(old, s)]
            if kept:
                log.warning(
                    "reload.needs_restart settings=%s: running with the old values until a restart",
                    ",".join(kept),
                )
            settings = new.model_copy(update={s: getattr(old, s) for s in RESTART_ONLY})
            before = set(self.service.feeds)
            try:
                await self.service.reconfigure(settings)
            except StoreError as exc:
                log.error("reload.failed error=%s: the running config stays", exc)
                return ReloadOutcome("failed", problems=[str(exc)])
            after = set(self.service.feeds)
            outcome = ReloadOutcome(
                "reloaded",
                feeds=len(after),
                watchlists=len(settings.watchlists),
                channels=len(settings.channels),
                added=sorted(after - before),
                removed=sorted(before - after),
                needs_restart=kept,
            )
            log.info(
                "reload.done feeds=%s added=%s removed=%s watchlists=%s channels=%s",
                outcome.feeds,
                ",".join(outcome.added) or "-",
                ",".join(outcome.removed) or "-",
                outcome.watchlists,
                outcome.channels,
            )
            return outcome
