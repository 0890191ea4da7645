"""/metrics of a real `monitor run`, scraped over HTTP and read with prometheus-client's own
parser: the outbox (depth and oldest age per channel), failing feeds and each feed's last success,
poll and fetch duration histograms, and the process collector's figures."""

from __future__ import annotations

import json
import socket
import urllib.request
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from httpserver import LoopbackServer
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample
from servicekit import SAMPLE, SAMPLE_WATCHLISTS, MonitorProcess, service_config


@pytest.fixture
def server() -> Iterator[LoopbackServer]:
    with LoopbackServer() as s:
        yield s


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def scrape(listen: str) -> dict[str, list[Sample]]:
    """Every sample of /metrics by sample name, as prometheus-client parses the text format."""
    with urllib.request.urlopen(f"http://{listen}/metrics", timeout=30) as response:
        text = response.read().decode()
    samples: dict[str, list[Sample]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append(sample)
    return samples


def value(samples: dict[str, list[Sample]], name: str, **labels: str) -> float:
    found = [s.value for s in samples.get(name, []) if s.labels == labels]
    assert len(found) == 1, (name, labels, samples.get(name))
    return found[0]


def event(name: str, **fields: object) -> Callable[[str], bool]:
    def matches(line: str) -> bool:
        if not line.startswith("{"):
            return False
        record = json.loads(line)
        return bool(
            record.get("event") == name and all(record.get(k) == v for k, v in fields.items())
        )

    return matches


def test_metrics_show_the_outbox_failing_feeds_durations_and_the_process(
    tmp_path: Path, server: LoopbackServer, database_url: str
) -> None:
    server.respond(
        "/news.xml",
        body=SAMPLE.read_bytes(),
        headers={"Content-Type": "application/rss+xml; charset=utf-8"},
    )
    dead_smtp = free_port()  # nothing listens: every alert to the desk waits in the outbox
    listen = f"127.0.0.1:{free_port()}"
    config = service_config(
        tmp_path / "config.yaml",
        database_url,
        {"news": server.url("/news.xml"), "broken": server.url("/status/500")},
        listen=listen,
        log_format="json",
        watchlists=SAMPLE_WATCHLISTS.replace('@red-line"}', '@red-line", notify: [desk]}')
        + "channels:\n  desk: {type: email, to: [desk@example.org]}\n"
        + f"email: {{host: 127.0.0.1, port: {dead_smtp}, starttls: false}}\n",
    )
    with MonitorProcess(config) as service:
        service.wait_for(event("poll.done", feed="news"))
        service.wait_for(event("poll.failed", feed="broken"))
        service.wait_for(event("alert.retry", channel="desk"))
        samples = scrape(listen)
        assert service.stop() == 0

    # The outbox: the desk's alerts wait, the oldest for some time already.
    pending = value(samples, "monitor_outbox_pending", channel="desk")
    assert pending >= 1
    assert 0 <= value(samples, "monitor_outbox_oldest_pending_age_seconds", channel="desk") < 3600
    # Feeds: one failing; the other's last success is now, the failing one has none.
    assert value(samples, "monitor_feeds_failing") == 1
    assert value(samples, "monitor_feeds_gone") == 0
    last = value(samples, "monitor_feed_last_success_timestamp_seconds", feed="news")
    assert abs(datetime.fromtimestamp(last, UTC) - datetime.now(UTC)) < timedelta(hours=1)
    assert [s.labels for s in samples["monitor_feed_last_success_timestamp_seconds"]] == [
        {"feed": "news"}
    ]
    # Histograms: both polls, both HTTP fetches, in buckets that add up.
    assert value(samples, "monitor_poll_duration_seconds_count") >= 2
    assert value(samples, "monitor_fetch_duration_seconds_count") >= 2
    assert value(samples, "monitor_fetch_duration_seconds_bucket", le="+Inf") == value(
        samples, "monitor_fetch_duration_seconds_count"
    )
    assert value(samples, "monitor_polls_total", status="error") >= 1
    # The process collector.
    assert value(samples, "process_resident_memory_bytes") > 0
    assert value(samples, "process_cpu_seconds_total") > 0
    assert value(samples, "process_open_fds") > 0
