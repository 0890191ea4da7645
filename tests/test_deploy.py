"""deploy/: the Kubernetes example is valid for Kubernetes (its API's schemas, strict: an unknown
or misspelt field fails), runs three replicas probed on the port the service listens on, takes
the database URL and the bot token from its Secret, and its config is one the service accepts;
every query of the Grafana dashboard reads metrics that /metrics really exports."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import kubernetes_validate
import promql_parser
import pytest
import yaml
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from monitor.config import parse_config
from monitor.daemon.health import Metrics
from monitor.outbox import DeliveryStats
from monitor.pipeline import PollResult
from monitor.store.alerts import Backlog
from monitor.store.feeds import FeedsForMetrics

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"
MANIFEST = DEPLOY / "kubernetes" / "news-monitor.yaml"
DASHBOARD = DEPLOY / "grafana" / "news-monitor.json"
# The oldest Kubernetes the example is for, and the newest whose schemas are at hand.
KUBERNETES_VERSIONS = ["1.27", kubernetes_validate.latest_version()]


def manifest() -> dict[str, dict[str, Any]]:
    """The manifest's objects by kind."""
    documents = [d for d in yaml.safe_load_all(MANIFEST.read_text("utf-8")) if d is not None]
    by_kind = {d["kind"]: d for d in documents}
    assert len(by_kind) == len(documents), "one object of each kind"
    return by_kind


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_every_object_of_the_manifest_is_valid_for_kubernetes(version: str) -> None:
    objects = manifest()
    assert set(objects) == {"Secret", "ConfigMap", "Deployment", "Service"}
    problems = []
    for kind, body in objects.items():
        try:
            kubernetes_validate.validate(body, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            problems.append(f"{kind}: {exc.message} at {'.'.join(map(str, exc.path))}")
    assert not problems


def test_three_replicas_probed_on_healthz_with_the_secrets_from_the_secret() -> None:
    objects = manifest()
    deployment, secret = objects["Deployment"], objects["Secret"]
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert deployment["spec"]["replicas"] == 3

    (config_mount,) = [m for m in container["volumeMounts"] if m["name"] == "config"]
    config_path = container["args"][container["args"].index("--config") + 1]
    assert config_path == f"{config_mount['mountPath']}/config.yaml"
    (config_volume,) = [v for v in pod["volumes"] if v["name"] == "config"]
    assert config_volume["configMap"]["name"] == objects["ConfigMap"]["metadata"]["name"]

    env = {variable["name"]: variable["valueFrom"]["secretKeyRef"] for variable in container["env"]}
    assert env.keys() == {"DATABASE_URL", "TELEGRAM_BOT_TOKEN"}
    for reference in env.values():
        assert reference["name"] == secret["metadata"]["name"]
        assert reference["key"] in secret["stringData"]

    # The config reads both from the environment and listens where the probes knock.
    values = {name: secret["stringData"][ref["key"]] for name, ref in env.items()}
    settings = parse_config(objects["ConfigMap"]["data"]["config.yaml"], config_path, env=values)
    assert settings.database.url == values["DATABASE_URL"]
    assert settings.telegram is not None
    assert settings.telegram.token.get_secret_value() == values["TELEGRAM_BOT_TOKEN"]
    assert settings.service.listen is not None
    port = int(settings.service.listen.rpartition(":")[2])
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        check = container[probe]["httpGet"]
        assert check["path"] == "/healthz", probe
        assert ports[check["port"]] == port, probe


def exported_metric_names() -> set[str]:
    """The sample names of the service's /metrics, with one of everything recorded (a labelled
    series appears once it has a value)."""
    metrics = Metrics()
    metrics.record_poll(PollResult("a", "ok", new_items=1, alerts=1))
    metrics.record_delivery(DeliveryStats(sent=1))
    metrics.fetch_duration.observe(0.1)
    metrics.poll_duration.observe(0.2)
    now = datetime.now(UTC)
    metrics.record_state(FeedsForMetrics(0, 0, {"a": now}), {"desk": Backlog(1, now)}, set(), now)
    text = generate_latest(metrics.registry).decode()
    return {s.name for family in text_string_to_metric_families(text) for s in family.samples}


def dashboard_queries() -> list[tuple[str, str]]:
    """(panel title, PromQL) of every query of the dashboard."""
    dashboard = json.loads(DASHBOARD.read_text("utf-8"))
    return [
        (panel["title"], target["expr"])
        for panel in dashboard["panels"]
        for target in panel.get("targets", [])
    ]


def metric_names(query: str) -> set[str]:
    """The metrics a PromQL query reads. Grafana's `$__rate_interval` becomes a duration first, as
    Grafana does before it sends the query."""
    names: set[str] = set()

    def visit(node: object) -> None:
        if isinstance(node, promql_parser.VectorSelector) and node.name:
            names.add(node.name)

    promql_parser.walk(promql_parser.parse(query.replace("$__rate_interval", "1m")), visit)
    return names


def test_every_dashboard_query_reads_metrics_the_service_exports() -> None:
    exported = exported_metric_names()
    queries = dashboard_queries()
    assert len(queries) >= 10
    read: set[str] = set()
    for title, query in queries:
        names = metric_names(query)
        assert names, f"{title}: {query} reads no metric"
        assert names <= exported, f"{title}: {sorted(names - exported)} not in /metrics"
        read |= names
    # Each of the service's own metrics has a panel (a new one needs a panel too).
    own = {name.removesuffix("_bucket") for name in exported if name.startswith("monitor_")}
    own -= {n for n in own if n.endswith(("_created", "_sum", "_count"))}
    assert own <= {name.removesuffix("_bucket") for name in read}
