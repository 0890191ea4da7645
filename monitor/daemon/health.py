"""Prometheus metrics of one process and the HTTP endpoint that serves them with `/healthz`.
Nothing here polls or delivers."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from aiohttp import web
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    generate_latest,
)

from monitor.outbox import DeliveryStats
from monitor.pipeline import PollResult

if TYPE_CHECKING:
    from monitor.daemon.service import Service


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
        self.polls_in_flight = Gauge(
            "monitor_polls_in_flight", "Feed polls running now", registry=self.registry
        )
        self.leader = Gauge(
            "monitor_leader",
            "1 while this process is the leader (Telegram commands, digests, pruning)",
            registry=self.registry,
        )

    def record_poll(self, result: PollResult) -> None:
        self.polls.labels(result.status).inc()
        self.items.inc(result.new_items + result.updated_items)
        self.alerts_enqueued.inc(result.alerts)

    def record_delivery(self, stats: DeliveryStats) -> None:
        self.deliveries.labels("sent").inc(stats.sent)
        self.deliveries.labels("retried").inc(stats.retried)
        self.deliveries.labels("failed").inc(stats.failed)
        self.deliveries.labels("dropped").inc(stats.dropped)


async def start_health_server(service: Service, listen: str) -> web.AppRunner:
    """`/healthz` (200 while the poll loop ticks) and Prometheus `/metrics` on `listen`."""
    from monitor.daemon.service import POLL_TICK_SECONDS

    async def healthz(_: web.Request) -> web.Response:
        age = time.monotonic() - service.last_tick
        healthy = age < max(30.0, POLL_TICK_SECONDS * 10)
        body = {"status": "ok" if healthy else "stalled", "last_tick_seconds_ago": round(age, 1)}
        return web.json_response(body, status=200 if healthy else 503)

    async def metrics(_: web.Request) -> web.Response:
        return web.Response(
            body=generate_latest(service.metrics.registry),
            headers={"Content-Type": CONTENT_TYPE_LATEST},
        )

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    host, _, port = listen.rpartition(":")
    site = web.TCPSite(runner, host.strip("[]") or "127.0.0.1", int(port))
    await site.start()
    return runner
