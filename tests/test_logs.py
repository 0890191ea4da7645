"""The service's log as an operator's log stack reads it, from a real `monitor run`: JSON lines
with the event and each field as keys, UTC ISO 8601 times in both formats, and a stop in the
middle of busy polls that logs no error and no warning."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from httpserver import LoopbackServer
from servicekit import SAMPLE, HeldFeed, MonitorProcess, service_config

UTC_ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


@pytest.fixture
def server() -> Iterator[LoopbackServer]:
    with LoopbackServer() as s:
        yield s


def parsed(line: str) -> dict[str, object]:
    record = json.loads(line)
    assert isinstance(record, dict), line
    return record


def event(name: str) -> Callable[[str], bool]:
    """A predicate for `MonitorProcess.wait_for`: a JSON line of the event `name`."""
    return lambda line: line.startswith("{") and parsed(line).get("event") == name


def test_json_lines_have_the_event_and_each_field_as_keys(
    tmp_path: Path, database_url: str
) -> None:
    config = service_config(
        tmp_path / "config.yaml", database_url, {"sample": str(SAMPLE)}, log_format="json"
    )
    with MonitorProcess(config) as service:
        done = service.wait_for(event("poll.done"))
        assert service.stop() == 0
    records = [parsed(line) for line in service.lines]  # every line is one JSON object
    poll = records[done]
    assert poll["event"] == "poll.done"
    assert poll["feed"] == "sample"
    assert poll["level"] == "info" and str(poll["logger"]).startswith("monitor")
    assert isinstance(poll["new"], int) and poll["new"] > 0
    assert "message" not in poll  # nothing left over in a message string
    for record in records:
        assert UTC_ISO.match(str(record["time"])), record
    assert [r["event"] for r in records][-1] == "run.stopped"


def test_text_lines_start_with_a_utc_iso_time_whatever_the_local_zone(
    tmp_path: Path, database_url: str
) -> None:
    config = service_config(tmp_path / "config.yaml", database_url, {"sample": str(SAMPLE)})
    with MonitorProcess(config, env={"TZ": "Asia/Tokyo"}) as service:  # UTC+9, no summer time
        done = service.wait_for(lambda line: " poll.done feed=sample " in line)
        assert service.stop() == 0
    stamp, level, logger, text = service.lines[done].split(" ", 3)
    assert UTC_ISO.match(stamp), stamp
    assert (level, logger) == ("INFO", "monitor.pipeline")
    assert text.startswith("poll.done feed=sample new=")
    written = datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
    assert abs(datetime.now(UTC) - written) < timedelta(hours=1)  # not Tokyo's clock
    for line in service.lines:
        assert UTC_ISO.match(line.split(" ", 1)[0]), line


def test_a_stop_during_busy_polls_logs_no_error_and_no_warning(
    tmp_path: Path, server: LoopbackServer
) -> None:
    held = [HeldFeed(server, f"/held-{n}.xml") for n in range(6)]
    feeds = {"sample": str(SAMPLE)} | {f"held-{n}": h.url for n, h in enumerate(held)}
    config = service_config(
        tmp_path / "config.yaml",
        f"sqlite:///{tmp_path / 'monitor.db'}",
        feeds,
        log_format="json",
        fetch="allow_private: true, per_host: 10",
    )
    with MonitorProcess(config) as service:
        service.wait_for(event("poll.done"))
        for feed in held:
            assert feed.requested.wait(timeout=60), "a held feed was never requested"
        assert service.stop() == 0
    records = [parsed(line) for line in service.lines]
    assert [r for r in records if r["level"] not in ("info", "debug")] == []
    assert not any("exception" in r for r in records)
    drained = [r for r in records if r.get("event") == "shutdown.drained"]
    assert drained == [drained[0]] and drained[0]["abandoned"] == 6, records
