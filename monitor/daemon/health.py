"""Prometheus metrics of one process and the HTTP endpoint that serves them with `/healthz`.
Nothing here polls or delivers.

`/healthz` answers 503 with the reason when polling or delivery has stalled (`health_report`): a
poll round or a delivery round that has made no progress for `STALL_SECONDS`, or every poll slot
busy that long while due feeds wait. A slow round that keeps making progress (a delivery waiting
for Telegram's rate limit, one alert after another) is not a stall. With `telegram:` configured it
also says how the subscriber bot is (`bot`): "running", "starting", a follower's, or why it does
not answer commands — then `status` is "degraded" (still 200: restarting the process would not
bring Telegram back or fix a token; the bot retries its start by itself). Times are the event loop's
monotonic clock, so a wall clock stepped back does not make the service look stalled (or not).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
from collections.abc import Iterator
from datetime import datetime
from typing import TYPE_CHECKING

from aiohttp import web
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from monitor.errors import StoreError
from monitor.outbox import DeliveryStats
from monitor.pipeline import PollResult
from monitor.store.alerts import Backlog
from monitor.store.feeds import FeedsForMetrics

if TYPE_CHECKING:
    from monitor.daemon.reload import Reloader
    from monitor.daemon.service import Service


POLL_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0)
FETCH_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0)


class DatabaseState(Collector):
    """The gauges with a series per feed or per channel, as last read from the database: built
    at each scrape from plain dicts, so 10,000 feeds cost no labelled child objects (a feed
    removed from the config simply leaves the next reading)."""

    def __init__(self) -> None:
        self.last_success: dict[str, float] = {}  # feed → Unix time
        self.outbox: dict[str, tuple[int, float]] = {}  # channel → (pending, oldest's age)

    def describe(self) -> list[Metric]:
        return list(self._families())

    def collect(self) -> Iterator[Metric]:
        return iter(self._families())

    def _families(self) -> list[Metric]:
        last_success = GaugeMetricFamily(
            "monitor_feed_last_success_timestamp_seconds",
            "When each active feed was last polled without failing (Unix time)",
            labels=["feed"],
        )
        for feed, moment in self.last_success.items():
            last_success.add_metric([feed], moment)
        pending = GaugeMetricFamily(
            "monitor_outbox_pending",
            "Alerts waiting in the outbox, per channel",
            labels=["channel"],
        )
        oldest = GaugeMetricFamily(
            "monitor_outbox_oldest_pending_age_seconds",
            "Age of the oldest alert waiting in the outbox, per channel (0: none waits)",
            labels=["channel"],
        )
        for channel, (count, age) in self.outbox.items():
            pending.add_metric([channel], count)
            oldest.add_metric([channel], age)
        return [last_success, pending, oldest]


class Metrics:
    """Prometheus metrics of one process (its own registry, so tests can build several)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.polls = Counter(
            "monitor_polls", "Feed polls by outcome", ["status"], registry=self.registry
        )
        self.items = Counter("monitor_items", "New or updated items stored", registry=self.registry)
        self.alerts_enqueued = Counter(
            "monitor_alerts_enqueued", "Alerts written to the outbox", registry=self.registry
        )
        self.deliveries = Counter(
            "monitor_deliveries", "Alert deliveries by outcome", ["outcome"], registry=self.registry
        )
        self.alert_edits = Counter(
            "monitor_alert_edits",
            "Edits of sent alerts to list the sources that joined their story, by outcome",
            ["outcome"],
            registry=self.registry,
        )
        self.polls_in_flight = Gauge(
            "monitor_polls_in_flight", "Feed polls running now", registry=self.registry
        )
        # Counted in a plain int and read at each scrape: two locked updates less per poll.
        self.polls_running = 0
        self.polls_in_flight.set_function(lambda: self.polls_running)
        self._polls_by_status: dict[str, Counter] = {}  # `polls`' labelled children
        self.feeds_gone = Gauge(
            "monitor_feeds_gone",
            "Feeds that have answered 404/410 for fetch.gone_after or longer (polled daily)",
            registry=self.registry,
        )
        self.leader = Gauge(
            "monitor_leader",
            "1 while this process is the leader (Telegram commands, digests, pruning)",
            registry=self.registry,
        )
        self.feeds_failing = Gauge(
            "monitor_feeds_failing",
            "Active feeds whose last poll failed (gone feeds included)",
            registry=self.registry,
        )
        # Per feed and per channel, from the database at each scrape (see `DatabaseState`).
        self.database_state = DatabaseState()
        self.registry.register(self.database_state)
        self.poll_duration = Histogram(
            "monitor_poll_duration_seconds",
            "One feed's poll: fetch, parse, store, match and queue alerts",
            buckets=POLL_BUCKETS,
            registry=self.registry,
        )
        self.fetch_duration = Histogram(
            "monitor_fetch_duration_seconds",
            "One HTTP fetch of a feed, from the request (or the wait for its host's turn) to "
            "the whole body or the error",
            buckets=FETCH_BUCKETS,
            registry=self.registry,
        )
        # CPU, memory, open files, start time; the Python version; the garbage collector.
        for collector in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
            self.registry.register(collector)

    def record_poll(self, result: PollResult) -> None:
        by_status = self._polls_by_status.get(result.status)
        if by_status is None:
            by_status = self._polls_by_status[result.status] = self.polls.labels(result.status)
        by_status.inc()
        # Most polls store nothing (304s): adding 0 would only take the counters' locks.
        if result.new_items or result.updated_items:
            self.items.inc(result.new_items + result.updated_items)
        if result.alerts:
            self.alerts_enqueued.inc(result.alerts)

    def record_state(
        self, feeds: FeedsForMetrics, backlog: dict[str, Backlog], channels: set[str], now: datetime
    ) -> None:
        """What the database says now: feeds failing or gone, each feed's last success, the
        outbox per channel (`channels`: those configured, shown at 0 when nothing waits)."""
        self.feeds_failing.set(feeds.failing)
        self.feeds_gone.set(feeds.gone)
        self.database_state.last_success = {
            name: moment.timestamp() for name, moment in feeds.last_success.items()
        }
        self.database_state.outbox = {
            channel: (
                (waiting.pending, max(0.0, (now - waiting.oldest).total_seconds()))
                if (waiting := backlog.get(channel))
                else (0, 0.0)
            )
            for channel in sorted(channels | backlog.keys())
        }

    def record_delivery(self, stats: DeliveryStats) -> None:
        self.deliveries.labels("sent").inc(stats.sent)
        self.deliveries.labels("retried").inc(stats.retried)
        self.deliveries.labels("failed").inc(stats.failed)
        self.deliveries.labels("dropped").inc(stats.dropped)
        self.alert_edits.labels("edited").inc(stats.edits.edited)
        self.alert_edits.labels("retried").inc(stats.edits.retried)
        self.alert_edits.labels("given_up").inc(stats.edits.given_up)
        self.alert_edits.labels("dropped").inc(stats.edits.dropped)
        self.deliveries.labels("unconfirmed").inc(stats.unconfirmed)


STALL_SECONDS = 120.0


def health_report(service: Service, now: float) -> dict[str, object]:
    """What /healthz says at loop time `now`: `status` ok or stalled, the `reason` (None when
    ok), and the figures it was judged on."""
    from monitor.daemon.service import MAX_CONCURRENT_POLLS

    reasons = []
    poll, deliver = service.tickers.get("poll"), service.tickers.get("deliver")
    poll_started = poll.started_at if poll is not None and poll.running else None
    if poll_started is not None and now - poll_started > STALL_SECONDS:
        reasons.append(
            f"polling stalled: the poll round started {now - poll_started:.0f} s ago "
            "has not ended (is the database answering?)"
        )
    full = service.polls_full_since
    if full is not None and now - full > STALL_SECONDS:
        reasons.append(
            f"polling stalled: all {MAX_CONCURRENT_POLLS} poll slots have been busy for "
            f"{now - full:.0f} s while due feeds wait"
        )
    if deliver is not None and deliver.running and deliver.started_at is not None:
        quiet_since = max(deliver.started_at, service.outbox.progress_at or 0.0)
        if now - quiet_since > STALL_SECONDS:
            reasons.append(
                f"delivery stalled: the delivery round started {now - deliver.started_at:.0f} s "
                f"ago has sent or recorded no alert for {now - quiet_since:.0f} s"
            )

    def ago(moment: float | None) -> float | None:
        return None if moment is None else round(now - moment, 1)

    status = "stalled" if reasons else "degraded" if service.bot_trouble else "ok"
    return {
        "status": status,
        "reason": "; ".join(reasons) or None,
        "bot": service.bot_status,
        "last_poll_round_seconds_ago": ago(poll.finished_at if poll else None),
        "last_delivery_round_seconds_ago": ago(deliver.finished_at if deliver else None),
        "polls_in_flight": len(service.polling),
        "feeds_parsing": service.poller.parsing,
    }


async def start_health_server(
    service: Service, listen: str, reloader: Reloader | None = None
) -> web.AppRunner:
    """`/healthz` (200, or 503 with the reason when polling or delivery stalls) and Prometheus
    `/metrics` on `listen`; with `reloader`, `POST /-/reload` from this machine reloads the
    config and answers what it did (200, or 422 with the problems of an invalid file)."""

    async def reload(request: web.Request) -> web.Response:
        if reloader is None:
            return web.json_response({"status": "unavailable"}, status=404)
        if not _from_this_machine(request):
            return web.json_response({"status": "refused: only from this machine"}, status=403)
        outcome = await reloader.reload()
        return web.json_response(outcome.as_json(), status=200 if outcome.ok else 422)

    async def healthz(_: web.Request) -> web.Response:
        body = health_report(service, asyncio.get_running_loop().time())
        return web.json_response(body, status=503 if body["reason"] else 200)

    async def metrics(_: web.Request) -> web.Response:
        with contextlib.suppress(StoreError):  # the last figures stand
            feeds, backlog = await asyncio.to_thread(service.state_for_metrics)
            channels = set(service.settings.channels)
            service.metrics.record_state(feeds, backlog, channels, service.clock())
        # Off the event loop: with 10,000 feeds the text is 850 KB (benchmarks/metrics.py).
        body = await asyncio.to_thread(generate_latest, service.metrics.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics)
    app.router.add_post("/-/reload", reload)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    host, _, port = listen.rpartition(":")
    site = web.TCPSite(runner, host.strip("[]") or "127.0.0.1", int(port))
    await site.start()
    return runner


def _from_this_machine(request: web.Request) -> bool:
    """Whether the request comes over loopback: a reload is for the operator on the machine, not
    for whoever can reach the metrics port."""
    remote = request.remote or ""
    try:
        return ipaddress.ip_address(remote.split("%")[0]).is_loopback
    except ValueError:
        return False
