"""Helpers for the monitoring tests: a real Prometheus server on loopback, promtool, PromQL metric names.

Prometheus and promtool come from the Debian package `prometheus` (`make test` installs it when missing:
tools/system-tools.txt).
A missing tool fails the test with that instruction: monitoring that is never checked is not shipped.
"""

from __future__ import annotations

import json
import math
import re
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import requests
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests import services, system_tools
from tests.services import ROOT, free_port

PROMETHEUS_DIR = ROOT / "deploy/prometheus"
DASHBOARD_DIR = ROOT / "deploy/grafana"


def require_tool(name: str) -> str:
    return system_tools.require(name)[0]


def promtool(*args: str, cwd: Path = PROMETHEUS_DIR) -> subprocess.CompletedProcess:
    return subprocess.run([require_tool("promtool"), *args], cwd=cwd, capture_output=True, text=True, timeout=60)


# ------------------------------------------------------------------------------------ a real server


@dataclass
class Prometheus:
    process: subprocess.Popen
    url: str
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def api(self, path: str, **params) -> dict:
        response = requests.get(f"{self.url}/api/v1/{path}", params=params, timeout=10)
        body = response.json()
        assert body["status"] == "success", f"{path} {params}: {body}"
        return body["data"]

    def query(self, expr: str) -> list[dict]:
        """Instant query; the result vector (or [scalar] for a scalar)."""
        data = self.api("query", query=expr)
        return [{"metric": {}, "value": data["result"]}] if data["resultType"] == "scalar" else data["result"]

    def values(self, expr: str) -> list[float]:
        return [float(sample["value"][1]) for sample in self.query(expr)]

    def wait_for(self, expr: str, accept: Callable[[list[float]], bool], timeout: float = 20) -> list[float]:
        """Polls `expr` until accept(values) holds; fails with the last values and the server's log."""
        seen: list[list[float]] = [[]]

        def accepted():
            seen[0] = self.values(expr)
            return accept(seen[0]) and seen[0]

        try:
            return services.wait_for(accepted, timeout, expr, interval=0.25) or seen[0]
        except AssertionError:
            raise AssertionError(f"{expr}: still {seen[0]} after {timeout} s\n{self.log()[-3000:]}") from None


def loopback_config(targets: dict[str, list[str]], name: str = "prometheus.yml") -> dict:
    """A shipped compose configuration with its DNS discovery replaced by loopback targets, scraping
    every second, and the shipped rules (by absolute path): everything else is exercised as shipped."""
    config = yaml.safe_load((PROMETHEUS_DIR / name).read_text())
    config["global"].update(scrape_interval="1s", scrape_timeout="1s", evaluation_interval="1s")
    config["rule_files"] = [str(PROMETHEUS_DIR / name) for name in config["rule_files"]]
    assert {job["job_name"] for job in config["scrape_configs"]} == set(targets)
    for job in config["scrape_configs"]:
        del job["dns_sd_configs"]
        job["static_configs"] = [{"targets": targets[job["job_name"]]}]
    return config


@contextmanager
def prometheus_server(folder: Path, config: dict, timeout: float = 30) -> Iterator[Prometheus]:
    binary = require_tool("prometheus")
    folder.mkdir(parents=True, exist_ok=True)
    config_path = folder / "prometheus.yml"
    config_path.write_text(yaml.safe_dump(config))
    port = free_port()
    log_path = folder / "prometheus.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen([binary, f"--config.file={config_path}", f"--storage.tsdb.path={folder / 'data'}",
                                    f"--web.listen-address=127.0.0.1:{port}"], stdout=log, stderr=subprocess.STDOUT)
    server = Prometheus(process, f"http://127.0.0.1:{port}", log_path)
    try:
        deadline = time.monotonic() + timeout
        while True:
            if process.poll() is not None:
                raise AssertionError(f"prometheus exited with {process.returncode}:\n{server.log()}")
            try:
                if requests.get(f"{server.url}/-/ready", timeout=1).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"prometheus not ready after {timeout} s:\n{server.log()}")
            time.sleep(0.1)
        yield server
    finally:
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def finite(values: list[float]) -> bool:
    return bool(values) and all(math.isfinite(v) for v in values)


# ----------------------------------------------------------------------------------- metric names


def exported_names(metrics_text: str) -> set[str]:
    """Every sample name a /metrics page exports (with _total, _bucket, _count, _sum suffixes)."""
    return {sample.name for family in text_string_to_metric_families(metrics_text) for sample in family.samples}


_STRINGS = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_LABEL_LISTS = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless", "bool",
             "offset", "inf", "nan"}
# An identifier not inside a number or duration, taken whole, and not called like a function.
_IDENTIFIER = re.compile(r"(?<![\w.:])([A-Za-z_:][\w:]*)(?![\w:])(?!\s*\()")


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects: what is left once strings, label matchers,
    ranges, grouping label lists, functions and keywords are taken out."""
    text = _STRINGS.sub('""', expr)
    text = re.sub(r"\{[^}]*\}", " ", text)
    text = re.sub(r"\[[^\]]*\]", " ", text)
    text = _LABEL_LISTS.sub(" ", text)
    return {name for name in _IDENTIFIER.findall(text) if name.lower() not in _KEYWORDS}


# ------------------------------------------------------------------------------------- dashboards

GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$__interval": "15s", "$__range": "1h", "${model}": ".*",
                     "$model": ".*"}


def dashboards() -> dict[str, dict]:
    return {path.name: json.loads(path.read_text()) for path in sorted(DASHBOARD_DIR.glob("*.json"))}


def panels(dashboard: dict) -> Iterator[dict]:
    for panel in dashboard["panels"]:
        yield panel
        yield from panel.get("panels", [])  # panels inside collapsed rows


def dashboard_queries(dashboard: dict) -> list[tuple[str, str]]:
    """(where, PromQL) for every panel target and every query variable, Grafana variables left in."""
    queries = [(f"panel {panel['title']!r} {target['refId']}", target["expr"])
               for panel in panels(dashboard) for target in panel.get("targets", [])]
    for variable in dashboard.get("templating", {}).get("list", []):
        if variable["type"] == "query":
            text = variable["query"]["query"] if isinstance(variable["query"], dict) else variable["query"]
            selector = re.fullmatch(r"\s*label_values\((.*),\s*\w+\)\s*", text)
            queries.append((f"variable {variable['name']!r}", selector.group(1) if selector else text))
    return queries


def substitute(expr: str) -> str:
    """Grafana's variables replaced the way Grafana would for a query sent to Prometheus."""
    for variable, value in sorted(GRAFANA_VARIABLES.items(), key=lambda item: -len(item[0])):
        expr = expr.replace(variable, value)
    assert "$" not in expr, f"unknown Grafana variable in {expr}"
    return expr


def rule_expressions() -> list[tuple[str, str]]:
    groups = yaml.safe_load((PROMETHEUS_DIR / "rules.yml").read_text())["groups"]
    return [(rule.get("record") or rule["alert"], rule["expr"]) for group in groups for rule in group["rules"]]


def recorded_names() -> set[str]:
    groups = yaml.safe_load((PROMETHEUS_DIR / "rules.yml").read_text())["groups"]
    return {rule["record"] for group in groups for rule in group["rules"] if "record" in rule}
