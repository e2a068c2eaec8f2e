"""Prometheus and Grafana agree with the services and with the metrics the code exports.

Prometheus must scrape every worker's metrics endpoint on the port that worker's settings bind
(on 0.0.0.0, or nothing outside the container can reach it) and the service exposes; Grafana's
dashboard may only query metrics and labels the scorer really exports.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from prometheus_client.metrics import MetricWrapperBase

from stream.devenv.redis_server import ensure_debian_tool
from stream.pipeline.health import Health, MetricsServer
from stream.scorer.metrics import ScorerMetrics

REPO_ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS_CONFIG = REPO_ROOT / "ops" / "prometheus" / "prometheus.yml"
GRAFANA = REPO_ROOT / "ops" / "grafana"
DASHBOARD = GRAFANA / "dashboards" / "riskstream.json"
# Series Prometheus itself adds to every scrape.
PROMETHEUS_BUILTINS = {"up", "scrape_duration_seconds", "scrape_samples_scraped"}
TARGET_LABELS = {"job", "instance", "service"}


def _prometheus() -> dict[str, Any]:
    loaded = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
    assert isinstance(loaded, dict)
    return loaded


def _scrape_targets() -> dict[str, list[tuple[str, int]]]:
    """job -> (host or DNS name, port) for static and DNS service discovery configs."""
    jobs: dict[str, list[tuple[str, int]]] = {}
    for job in _prometheus()["scrape_configs"]:
        targets = jobs.setdefault(job["job_name"], [])
        for static in job.get("static_configs", []):
            for target in static["targets"]:
                host, port = target.rsplit(":", 1)
                targets.append((host, int(port)))
        for dns in job.get("dns_sd_configs", []):
            assert dns.get("type") == "A", "compose's DNS serves A records, not SRV"
            targets.extend((name, int(dns["port"])) for name in dns["names"])
    return jobs


def _worker(compose: Any, service: str) -> str | None:
    """`scorer` or `trainer` for a service running `riskstream run <worker>`. The case desk
    exports no Prometheus metrics (its healthcheck is its web port's /health): not a target."""
    if service not in compose.riskstream_services():
        return None
    args = compose.riskstream_args(service)
    return args[1] if args[:1] == ["run"] and args[1:2] != ["desk"] else None


def _healthcheck_port(compose: Any, service: str) -> int:
    test = " ".join(compose.services[service]["healthcheck"]["test"])
    match = re.search(r"http://127\.0\.0\.1:(\d+)/", test)
    assert match is not None, f"{service}: healthcheck is not an HTTP probe"
    return int(match[1])


# -- Prometheus -------------------------------------------------------------------------------


def test_every_worker_is_scraped_where_it_listens(
    compose: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    targets = _scrape_targets()
    scraped = {name: port for pairs in targets.values() for name, port in pairs}
    # The demo's simulated analyst desk (`run analyst`) has no metrics to scrape, only /health.
    workers = {
        s: w for s in compose.services if (w := _worker(compose, s)) not in (None, "analyst")
    }
    assert set(workers.values()) == {"scorer", "trainer"}
    for service, worker in workers.items():
        settings = compose.settings_for(service, monkeypatch)
        section = getattr(settings, worker)
        assert service in scraped, f"no Prometheus job scrapes {service}"
        assert scraped[service] == section.metrics_port, (
            f"Prometheus scrapes {service}:{scraped[service]} but it binds {section.metrics_port}"
        )
        # A container's loopback cannot be scraped from Prometheus's container.
        assert section.metrics_host == "0.0.0.0", f"{service} binds {section.metrics_host}"  # noqa: S104
        assert str(section.metrics_port) in compose.services[service].get("expose", [])
        assert _healthcheck_port(compose, service) == section.metrics_port


def test_scorer_healthcheck_command_tracks_liveness(compose: Any) -> None:
    """Docker's probe, run exactly as compose runs it (but on a free loopback port), against
    the scorer's real metrics server: healthy while the loop beats, unhealthy once it stalls."""
    test = compose.services["scorer"]["healthcheck"]["test"]
    assert test[:2] == ["CMD", "python"]
    health = Health(stall_after_s=1.0)
    server = MetricsServer("127.0.0.1", 0, ScorerMetrics().registry, health).start()
    try:
        probe = [sys.executable, *(arg.replace(":9464/", f":{server.port}/") for arg in test[2:])]
        health.beat()
        alive = subprocess.run(probe, capture_output=True, timeout=30, check=False)
        assert alive.returncode == 0, alive.stderr
        time.sleep(1.2)  # no beat since: the loop looks stuck
        stalled = subprocess.run(probe, capture_output=True, timeout=30, check=False)
        assert stalled.returncode != 0
    finally:
        server.stop()


def test_every_target_is_a_service(compose: Any) -> None:
    for job, pairs in _scrape_targets().items():
        for name, _port in pairs:
            if job == "prometheus":
                assert name == "localhost"
            else:
                assert name in compose.services, f"job {job} scrapes unknown service {name}"


def test_prometheus_runs_this_config(compose: Any) -> None:
    service = compose.services["prometheus"]
    flags = dict(arg.split("=", 1) for arg in service["command"])
    mounted = compose.volume_target("prometheus", "./ops/prometheus/prometheus.yml")
    assert flags["--config.file"] == mounted
    listen_port = flags["--web.listen-address"].rsplit(":", 1)[1]
    assert ("localhost", int(listen_port)) in _scrape_targets()["prometheus"]
    assert any(p.endswith(f":{listen_port}") for p in service["ports"])


def test_promtool_accepts_the_config() -> None:
    promtool = ensure_debian_tool("promtool", "prometheus")  # `make test` installed it
    result = subprocess.run(
        [str(promtool), "check", "config", "--syntax-only", str(PROMETHEUS_CONFIG)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


# -- Grafana ----------------------------------------------------------------------------------


def _datasource() -> dict[str, Any]:
    provisioned = yaml.safe_load((GRAFANA / "provisioning/datasources/prometheus.yml").read_text())
    (datasource,) = provisioned["datasources"]
    assert isinstance(datasource, dict)
    return datasource


def _panels() -> list[dict[str, Any]]:
    dashboard = json.loads(DASHBOARD.read_text())
    panels = [p for p in dashboard["panels"] if p["type"] != "row"]
    assert panels
    return panels


def _exported_metrics() -> dict[str, set[str]]:
    """Series name -> label names, for everything ScorerMetrics exports (counters as
    `_total`, histograms as `_bucket`/`_sum`/`_count`, as the exposition format names them)."""
    series: dict[str, set[str]] = {}
    metrics = ScorerMetrics()
    for wrapper in vars(metrics).values():
        if not isinstance(wrapper, MetricWrapperBase):
            continue
        labels = set(wrapper._labelnames)  # no public accessor in prometheus_client
        for described in wrapper.describe():
            if described.type == "counter":
                series[f"{described.name}_total"] = labels
            elif described.type == "histogram":
                series[f"{described.name}_bucket"] = labels | {"le"}
                series[f"{described.name}_sum"] = labels
                series[f"{described.name}_count"] = labels
            else:
                series[described.name] = labels
    # Nothing registered escaped the walk above (a metric kept outside an attribute would).
    bases = {re.sub(r"_(total|bucket|sum|count)$", "", name) for name in series}
    assert {m.name for m in metrics.registry.collect()} <= bases
    return series


def test_grafana_reads_the_stack_prometheus(compose: Any) -> None:
    datasource = _datasource()
    url = urlsplit(datasource["url"])
    assert url.hostname == "prometheus"
    assert url.hostname in compose.services
    flags = dict(a.split("=", 1) for a in compose.services["prometheus"]["command"])
    assert str(url.port) == flags["--web.listen-address"].rsplit(":", 1)[1]


def test_grafana_finds_the_dashboard(compose: Any) -> None:
    providers = yaml.safe_load((GRAFANA / "provisioning/dashboards/riskstream.yml").read_text())
    (provider,) = providers["providers"]
    mounted = compose.volume_target("grafana", "./ops/grafana/dashboards")
    assert provider["options"]["path"] == mounted
    assert compose.volume_target("grafana", "./ops/grafana/provisioning") == (
        "/etc/grafana/provisioning"
    )
    home = compose.environment("grafana")["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert home == f"{mounted}/{DASHBOARD.name}"


def test_panels_query_the_provisioned_datasource() -> None:
    uid = _datasource()["uid"]
    ids = [panel["id"] for panel in _panels()]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for panel in _panels():
        assert panel["datasource"]["uid"] == uid, panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == uid, panel["title"]


def test_panels_query_metrics_and_labels_the_scorer_exports() -> None:
    exported = _exported_metrics()
    assert "riskstream_alerts_total" in exported  # the parser of the exposition names works
    for panel in _panels():
        for target in panel["targets"]:
            expr = target["expr"]
            names = set(re.findall(r"\b(riskstream_[a-z0-9_]+)\b", expr))
            builtins = {n for n in PROMETHEUS_BUILTINS if re.search(rf"\b{n}\b\s*[{{(]", expr)}
            assert names or builtins, f"{panel['title']}: queries no known metric: {expr}"
            unknown = names - set(exported)
            assert not unknown, f"{panel['title']}: {sorted(unknown)} are not exported"
            if builtins:
                continue
            allowed = set().union(*(exported[n] for n in names)) | TARGET_LABELS
            used = set(re.findall(r"([a-z_]+)\s*=~?\s*\"", expr))
            for grouping in re.findall(r"\bby\s*\(([^)]*)\)", expr):
                used |= {label.strip() for label in grouping.split(",") if label.strip()}
            assert used <= allowed, f"{panel['title']}: labels {sorted(used - allowed)}"


def test_the_dashboard_shows_what_ops_asked_for() -> None:
    """Throughput, lag, latency and alerts by typology (issue 9)."""
    exprs = " ".join(t["expr"] for p in _panels() for t in p["targets"])
    assert "rate(riskstream_events_in_total" in exprs
    assert "riskstream_consumer_lag" in exprs
    assert "histogram_quantile(0.95" in exprs
    assert "riskstream_event_to_alert_seconds_bucket" in exprs
    assert re.search(r"by \(typology\) \(rate\(riskstream_alerts_total", exprs)
