"""Dashboards as code: the committed JSON is what the generator produces, and it is valid.

No Grafana can run here, so validity is checked structurally (unique panel
ids, the $datasource variable and no data-source uid, known panel types, a
layout inside Grafana's 24-column grid, variables that exist) and every panel
query is parsed by promtool. That the queries return data is tested against a
real Prometheus in tests/integration/test_dashboards_prometheus.py.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterator

import pytest
import yaml

pytest.importorskip("grafana_foundation_sdk")

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from dashboards import generate  # noqa: E402
from dashboards.metrics import AGENT_METRICS, PENDING_METRICS, PROMETHEUS_METRICS, metric_names, recorded_names  # noqa: E402

BUILTIN_VARIABLES = {"__rate_interval", "__range", "__interval"}


def _dashboards() -> Iterator[tuple[generate.DashboardSpec, dict[str, Any]]]:
    for spec in generate.DASHBOARDS:
        yield spec, json.loads(generate.path_of(spec).read_text())


def _datasource_refs(node: Any) -> Iterator[dict[str, Any]]:
    if isinstance(node, dict):
        if "datasource" in node and isinstance(node["datasource"], dict):
            yield node["datasource"]
        for value in node.values():
            yield from _datasource_refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from _datasource_refs(value)


def test_committed_json_is_what_the_generator_produces() -> None:
    assert {p.name for p in generate.OUT_DIR.glob("*.json")} == {generate.path_of(s).name for s in generate.DASHBOARDS}
    for spec in generate.DASHBOARDS:
        assert generate.path_of(spec).read_text() == generate.render(spec), (
            f"{generate.path_of(spec)} is stale: run `python -m dashboards.generate`")


def test_the_five_dashboards() -> None:
    titles = {d["title"] for _s, d in _dashboards()}
    assert titles == {"fntax / Host overview", "fntax / Function drill-down", "fntax / VMs", "fntax / Agent health",
                      "fntax / Fleet"}
    uids = [d["uid"] for _s, d in _dashboards()]
    assert len(set(uids)) == len(uids)


@pytest.mark.parametrize("spec", generate.DASHBOARDS, ids=lambda s: s.uid)
def test_dashboard_json_is_valid(spec: generate.DashboardSpec) -> None:
    board = json.loads(generate.path_of(spec).read_text())
    assert board["schemaVersion"] >= 39  # Grafana 11's classic model
    assert board.get("id") is None  # instance-specific: provisioning assigns it
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids)) and all(isinstance(i, int) and i > 0 for i in ids)
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    # Every data-source reference goes through the variable: no uid of one Grafana.
    refs = list(_datasource_refs(board))
    assert refs and all(ref == {"type": "prometheus", "uid": "${datasource}"} for ref in refs)
    occupied: set[tuple[int, int]] = set()
    for panel in board["panels"]:
        assert panel["type"] in generate.PANEL_TYPES | {"row"}, panel["type"]
        grid = panel["gridPos"]
        assert 0 <= grid["x"] and grid["x"] + grid["w"] <= 24 and grid["h"] > 0
        cells = {(x, y) for x in range(grid["x"], grid["x"] + grid["w"]) for y in range(grid["y"], grid["y"] + grid["h"])}
        assert not cells & occupied, f"{panel['title']} overlaps another panel"
        occupied |= cells
        if panel["type"] == "row":
            continue
        assert panel["title"] and panel.get("description"), panel
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            used = set(re.findall(r"\$(\w+)", target["expr"]))
            assert used <= set(variables) | BUILTIN_VARIABLES, (panel["title"], used)
            if panel["type"] == "timeseries":
                assert target["range"] is True
            else:
                assert target["instant"] is True


def test_every_metric_a_dashboard_reads_is_known() -> None:
    recorded = recorded_names()
    for spec in generate.DASHBOARDS:
        for panel in spec.panels:
            for query in panel.queries:
                for metric in metric_names(query.expr):
                    if metric in PENDING_METRICS:
                        print(f"{spec.uid} / {panel.title}: {metric} pending: {PENDING_METRICS[metric]}")
                        continue
                    assert metric in AGENT_METRICS | PROMETHEUS_METRICS | recorded, (spec.uid, panel.title, metric)


def substitute(expr: str) -> str:
    """A panel query as Prometheus receives it from Grafana with every variable on All."""
    for name in ("instance", "function", "kind", "vm"):
        expr = expr.replace(f"${name}", ".*")
    return expr.replace("$__rate_interval", "1m").replace("$__range", "1h")


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool is not installed")
def test_every_panel_query_parses(tmp_path: Path) -> None:
    rules = [{"record": f"panel:{spec.uid.replace('-', '_')}:q{n}", "expr": substitute(query.expr)}
             for spec in generate.DASHBOARDS for n, query in
             enumerate(q for panel in spec.panels for q in panel.queries)]
    path = tmp_path / "panels.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "panels", "rules": rules}]}))
    result = subprocess.run(["promtool", "check", "rules", str(path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_issue_panels_are_present() -> None:
    titles = {spec.uid: {p.title for p in spec.panels} for spec in generate.DASHBOARDS}
    assert {"Instruction-tax ratio over time", "Tax by category", "Top functions by tax dollars per hour",
            "Top functions by tax seconds", "Cold-start decompression by library",
            "CPU-share wait by function"} <= titles["fntax-host-overview"]
    assert {"Syscalls by name", "Page faults by type", "Page-fault exceptions by mode", "Context switches by type",
            "Run-queue wait", "Interrupt time by type", "Decompression by library", "Tax by category",
            "Tax dollars per hour"} <= titles["fntax-function"]
    assert {"VM exits by reason", "Time in VM exits", "Exits handled in the VMM by reason", "vCPU wait"} <= titles[
        "fntax-vms"]
    assert {"Probe mean run time", "Probes attached", "Map fill", "Map update failures", "Lost events",
            "Scrape duration", "Agent CPU", "Agent memory"} <= titles["fntax-agent-health"]
    assert {"Tax ratio per host", "Tax ratio by kernel", "Fleet top functions by tax dollars per hour"} <= titles[
        "fntax-fleet"]


def test_provisioning_points_grafana_at_the_dashboards() -> None:
    prov = ROOT / "dashboards" / "provisioning"
    datasources = yaml.safe_load((prov / "datasources" / "fntax.yaml").read_text())
    assert datasources["apiVersion"] == 1
    (source,) = datasources["datasources"]
    assert source["type"] == "prometheus" and source["isDefault"] is True
    providers = yaml.safe_load((prov / "dashboards" / "fntax.yaml").read_text())
    (provider,) = providers["providers"]
    assert provider["type"] == "file"
    # The Vagrant provisioning copies the generated JSON to the provider's path.
    provision = (ROOT / "vagrant" / "provision.sh").read_text()
    assert provider["options"]["path"] in provision
