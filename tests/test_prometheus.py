"""A real Prometheus, configured as shipped, scraping a real bridge and two real workers on loopback.

N requests go through the bridge; Prometheus's query API must then count N at the bridge and N
inferences summed over both workers, compute a latency quantile, and evaluate every shipped rule
without error. The Grafana dashboard is checked against the same services: every metric it names must
be one they export (scraped here, not listed by hand, so new metrics need no test change), and every
query must run in Prometheus.
"""

from __future__ import annotations

import pytest
import requests

from tests.dicom_factory import SeriesSpec, write_study
from tests.http_helpers import post_like_original_tool
from tests.monitoring import (
    dashboard_queries,
    dashboards,
    exported_names,
    finite,
    loopback_config,
    metric_names,
    panels,
    prometheus_server,
    recorded_names,
    rule_expressions,
    substitute,
)
from tests.services import free_port, spawn, start_worker, wait_for_http

N = 6
INFERENCE_ROUTE = '{route="/"}'


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    """Two workers (metrics on their own ports), a bridge round-robining over both, Prometheus.

    Prometheus starts first: its service discovery hands targets to the scrapers only every 5 s, and
    the services start meanwhile."""
    tmp = tmp_path_factory.mktemp("monitoring")
    metrics_ports, bridge_port = [free_port(), free_port()], free_port()
    targets = {"bridge": [f"127.0.0.1:{bridge_port}"], "worker": [f"127.0.0.1:{port}" for port in metrics_ports]}
    services = []
    with prometheus_server(tmp / "prometheus", loopback_config(targets)) as prometheus:
        try:
            workers = [start_worker(tmp, "mock_model", "--metrics-listen", f"127.0.0.1:{port}")
                       for port in metrics_ports]
            services += workers
            target = "ipv4:" + ",".join(w.address for w in workers)
            bridge = spawn(tmp, "bridge", ["-m", "bridge", "--worker", target, "--listen", targets["bridge"][0]],
                           bridge_port)
            services.append(bridge)
            wait_for_http(bridge, "/healthcheck", "READY")
            yield {"prometheus": prometheus, "bridge": bridge, "workers": workers,
                   "metrics_urls": [f"http://{address}/metrics" for address in targets["bridge"] + targets["worker"]],
                   "study": write_study(tmp / "study", [SeriesSpec("ct", rows=16, cols=20, count=2)])}
        finally:
            for service in services:
                service.stop()


@pytest.fixture(scope="module")
def traffic(stack):
    """N inferences through the bridge, Prometheus scraping in between (so rates have an increase)."""
    prometheus, bridge = stack["prometheus"], stack["bridge"]
    prometheus.wait_for("up", lambda values: values == [1.0, 1.0, 1.0])
    paths = [i.path for i in stack["study"].instances]

    def send() -> None:
        response = post_like_original_tool(f"http://{bridge.address}/", {}, paths, timeout=60)
        assert response.status_code == 200, response.text

    # A counter's first sample has no predecessor to rate against: let Prometheus see 1 first.
    send()
    prometheus.wait_for(f"sum(bridge_http_requests_total{INFERENCE_ROUTE})", lambda values: values == [1.0])
    prometheus.wait_for("sum(worker_inferences_total)", lambda values: values == [1.0])
    for _ in range(N - 1):
        send()
    prometheus.wait_for(f"sum(bridge_http_requests_total{INFERENCE_ROUTE})", lambda values: values == [N])
    prometheus.wait_for("sum(worker_inferences_total)", lambda values: values == [N])
    return stack


def test_prometheus_counts_every_request_at_the_bridge_and_the_workers(traffic):
    prometheus = traffic["prometheus"]
    assert prometheus.values(f"sum(bridge_http_requests_total{INFERENCE_ROUTE})") == [N]
    assert prometheus.values('sum(bridge_http_requests_total{route="/", code="200"})') == [N]
    assert prometheus.values("sum(worker_inferences_total)") == [N]
    # Both replicas were scraped on their own and both served (round_robin): the sum is over two targets.
    per_worker = prometheus.query('sum by (instance) (worker_inferences_total{job="worker"})')
    assert len(per_worker) == 2 and all(float(sample["value"][1]) > 0 for sample in per_worker), per_worker
    assert prometheus.values('sum(worker_inferences_total{outcome="ok"})') == [N]


def test_latency_quantile_of_the_bridge_is_a_number(traffic):
    prometheus = traffic["prometheus"]
    buckets = f"bridge_http_request_duration_seconds_bucket{INFERENCE_ROUTE}"
    expr = f"histogram_quantile(0.95, sum by (le) (rate({buckets}[1m])))"
    (p95,) = prometheus.wait_for(expr, finite)
    assert 0 < p95 < 60


def test_shipped_rules_evaluate_against_the_real_services(traffic):
    prometheus = traffic["prometheus"]
    # Routes queried once (a readiness check) have no increase, hence no quantile: look at "/".
    for record in ("route:bridge_http_request_duration_seconds:p95_5m{route=\"/\"}",
                   "route:bridge_http_requests:rate5m{route=\"/\"}",
                   "model_stage:worker_inference_duration_seconds:p95_5m{stage=\"infer\"}",
                   "model:worker_inferences:rate5m"):
        assert len(prometheus.wait_for(record, finite)) == 1, record
    assert prometheus.wait_for('route:bridge_http_errors:ratio_rate5m{route="/"}', finite) == [0.0]
    assert prometheus.values('job:worker_model_loaded:sum{job="worker"}') == [2.0]
    groups = prometheus.api("rules")["groups"]
    rules = [rule for group in groups for rule in group["rules"]]
    assert len(rules) == len(rule_expressions())
    broken = [(rule["name"], rule.get("lastError")) for rule in rules if rule["health"] != "ok"]
    assert not broken, broken
    # All is well: no alert pending or firing.
    assert prometheus.api("alerts")["alerts"] == []


@pytest.fixture(scope="module")
def exported(traffic) -> set[str]:
    """The metric names the running bridge and workers export, after real traffic (labelled series
    exist only once used)."""
    names = set()
    for url in traffic["metrics_urls"]:
        names |= exported_names(requests.get(url, timeout=5).text)
    return names


def test_dashboards_ship():
    # The dashboard tests below are parametrized by file: without this, no file would mean no test.
    assert dashboards()


@pytest.mark.parametrize("name", sorted(dashboards()))
def test_dashboard_names_only_metrics_the_services_export(name, exported):
    queries = dashboard_queries(dashboards()[name])
    named = {}
    for where, expr in queries:
        names = metric_names(substitute(expr))
        assert names, f"{where}: no metric found in {expr}"
        named.update(dict.fromkeys(names, where))
    unknown = {metric: where for metric, where in named.items() if metric not in exported}
    assert not unknown, f"not exported by the bridge or the workers: {unknown}"


def test_rules_name_only_exported_or_recorded_metrics(exported):
    # `up` is Prometheus's own series for every target.
    known = exported | recorded_names() | {"up"}
    for name, expr in rule_expressions():
        unknown = metric_names(expr) - known
        assert not unknown, f"{name}: {unknown}"


@pytest.mark.parametrize("name", sorted(dashboards()))
def test_dashboard_queries_run_in_prometheus(name, traffic):
    prometheus = traffic["prometheus"]
    empty = []
    for where, expr in dashboard_queries(dashboards()[name]):
        result = prometheus.query(substitute(expr))  # fails on a syntax error
        if not result:
            empty.append((where, expr))
    # After successful traffic only the error panels may be empty.
    unexpected = [(where, expr) for where, expr in empty if 'code!~"2..' not in expr and "outcome!=" not in expr
                  and 'code=~"5..' not in expr]
    assert not unexpected, unexpected


@pytest.mark.parametrize("name", sorted(dashboards()))
def test_dashboard_layout(name):
    dashboard = dashboards()[name]
    all_panels = list(panels(dashboard))
    ids = [panel["id"] for panel in all_panels]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    assert dashboard["uid"] and dashboard["title"]
    variables = {variable["name"]: variable for variable in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    for panel in all_panels:
        if panel["type"] == "row":
            continue
        # Every panel and query follows the dashboard's data source choice, so it imports anywhere.
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == panel["datasource"], panel["title"]
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
    # What the issue asks the dashboard to show, by the metric behind it.
    everything = " ".join(expr for _, expr in dashboard_queries(dashboard))
    for needle in ("rate(bridge_http_requests_total", "histogram_quantile(0.95, sum by (route, le) (rate("
                   "bridge_http_request_duration_seconds_bucket", "by (route, code)", "worker_queue_depth",
                   "worker_inflight_inferences", "worker_model_loaded", "worker_inference_duration_seconds_bucket",
                   "worker_batch_size_bucket", "worker_batch_fill_seconds_bucket", "worker_batch_model_seconds_bucket"):
        assert needle in everything, needle


def test_metric_name_extraction():
    """The extraction the dashboard check relies on, on the shapes of PromQL it meets."""
    expr = ('histogram_quantile(0.95, sum by (route, le) (rate(bridge_http_request_duration_seconds_bucket'
            '{code=~"5..", route!~"/healthz|other"}[5m] offset 1m))) / on (route) group_left (model) '
            'max without (instance) (worker_model_loaded) > bool 1e3 or absent(up == 1) unless topk(3, x:y:z)')
    assert metric_names(expr) == {"bridge_http_request_duration_seconds_bucket", "worker_model_loaded", "up",
                                  "x:y:z"}
    assert metric_names("sum(rate(a_total[$__rate_interval]))".replace("$__rate_interval", "1m")) == {"a_total"}
