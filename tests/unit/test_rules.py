"""Prometheus recording and alerting rules: promtool checks them and runs their unit tests.

Every alert has a promtool test case where it fires and one where it stays
quiet; every metric a rule reads is one the agent exports, a recorded series,
or a name listed in dashboards.metrics.PENDING_METRICS.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from dashboards.metrics import (  # noqa: E402
    AGENT_METRICS, PENDING_METRICS, PROMETHEUS_METRICS, RULE_FILES, RULES_DIR, metric_names, recorded_names,
    rule_groups,
)

TEST_FILES = sorted((RULES_DIR / "tests").glob("*.test.yaml"))
needs_promtool = pytest.mark.skipif(shutil.which("promtool") is None,
                                    reason="promtool is not installed (Debian's prometheus package has it)")


def _alerts() -> dict[str, dict[str, object]]:
    return {str(rule["alert"]): rule for group in rule_groups([RULES_DIR / "fntax-alerts.yaml"])
            for rule in group["rules"] if "alert" in rule}  # type: ignore[attr-defined]


def test_rule_files_exist() -> None:
    assert {p.name for p in RULE_FILES} == {"fntax-recording.yaml", "fntax-alerts.yaml", "fntax-fleet.yaml"}
    assert TEST_FILES


@needs_promtool
@pytest.mark.parametrize("path", RULE_FILES, ids=lambda p: p.name)
def test_promtool_check_rules(path: Path) -> None:
    result = subprocess.run(["promtool", "check", "rules", str(path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


@needs_promtool
@pytest.mark.parametrize("path", TEST_FILES, ids=lambda p: p.name)
def test_promtool_test_rules(path: Path) -> None:
    result = subprocess.run(["promtool", "test", "rules", path.name], capture_output=True, text=True, cwd=path.parent)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_is_tested_firing_and_quiet() -> None:
    fires: set[str] = set()
    quiet: set[str] = set()
    for path in TEST_FILES:
        for case in yaml.safe_load(path.read_text())["tests"]:
            for check in case.get("alert_rule_test", []):
                (fires if check.get("exp_alerts") else quiet).add(check["alertname"])
    alerts = set(_alerts())
    assert alerts - fires == set(), "alerts never shown firing"
    assert alerts - quiet == set(), "alerts never shown quiet"


def test_every_alert_has_a_runbook() -> None:
    for name, rule in _alerts().items():
        annotations = rule["annotations"]
        assert isinstance(annotations, dict)
        for key in ("summary", "description", "runbook"):
            assert annotations.get(key), f"{name} has no {key}"
        assert rule["labels"]["severity"] in {"warning", "critical"}, name  # type: ignore[index]


def test_rules_read_known_metrics() -> None:
    recorded = recorded_names()
    for group in rule_groups():
        for rule in group["rules"]:  # type: ignore[attr-defined]
            name = rule.get("record") or rule.get("alert")
            for metric in metric_names(rule["expr"]):
                if metric in PENDING_METRICS:
                    print(f"{name}: reads {metric}, pending: {PENDING_METRICS[metric]}")
                    continue
                assert metric in AGENT_METRICS | PROMETHEUS_METRICS | recorded, f"{name} reads unknown {metric}"


def test_recorded_names_follow_the_convention() -> None:
    # level:metric:operations (Prometheus's naming practice for recording rules).
    for name in recorded_names():
        level, _metric, *ops = name.split(":")
        assert level == "fntax" and name.count(":") >= 2, name
