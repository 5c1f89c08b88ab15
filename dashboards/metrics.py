"""Which metric names the dashboards and rules may use, and how to find them in PromQL.

PENDING_METRICS: names the dashboards and rules already use but the agent does
not export yet. Checks that need a metric in the agent's exposition, or a panel
query to return data, skip these with a printed reason. Empty it as the agent
gains them.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Iterable

import yaml

REPO = Path(__file__).resolve().parent.parent
RULES_DIR = REPO / "deploy" / "prometheus" / "rules"
RULE_FILES = tuple(sorted(RULES_DIR.glob("*.yaml")))

PENDING_METRICS: dict[str, str] = {}

# What the agent exports today (README "Metrics"; checked against a real
# agent's exposition by tests/integration/test_dashboards_prometheus.py).
AGENT_METRICS = frozenset({
    "fntax_syscalls_total", "fntax_syscall_seconds_total", "fntax_context_switches_total",
    "fntax_runqueue_wait_seconds_total", "fntax_oncpu_seconds_total", "fntax_page_faults_total",
    "fntax_page_fault_exceptions_total", "fntax_irq_seconds_total", "fntax_decompression_seconds_total",
    "fntax_tax_seconds_total", "fntax_tax_dollars_total", "fntax_syscalls_by_name_total",
    "fntax_probe_attached", "fntax_probe_runs_total", "fntax_probe_run_seconds_total",
    "fntax_probe_mean_run_seconds", "fntax_map_entries", "fntax_map_capacity", "fntax_map_update_failures_total",
    "fntax_agent_cpu_seconds_total", "fntax_agent_resident_memory_bytes", "fntax_collect_errors_total",
    "fntax_scrape_duration_seconds", "fntax_processes_started_total", "fntax_events_lost_total",
    "fntax_kvm_exits_total", "fntax_kvm_exit_seconds_total", "fntax_kvm_userspace_exits_total",
    "fntax_kvm_userspace_exit_seconds_total", "fntax_vcpu_wait_seconds_total", "fntax_kvm_figure_measured",
    "fntax_invocations_total", "fntax_cpu_share_wait_seconds_total", "fntax_host_info",
})

# Exported, but only where the host lets fntax measure them: kvm_exit and
# kvm_entry never fire on nested or PVM hosts (like the test machines), and
# the agent then exports no series rather than zeros that look measured
# (fntax_kvm_figure_measured says so). Panels reading these return data only
# on a host whose kvm_exit fires.
HOST_DEPENDENT_METRICS: dict[str, str] = {
    "fntax_kvm_exits_total": "VM exits by reason: kvm_exit is silent on nested/PVM hosts",
    "fntax_kvm_exit_seconds_total": "VM exit time: kvm_exit/kvm_entry are silent on nested/PVM hosts",
}

# Series Prometheus itself makes for each target.
PROMETHEUS_METRICS = frozenset({"up", "scrape_duration_seconds", "scrape_samples_scraped"})

_METRIC = re.compile(r"(?<![\w:\"'$])(fntax[_:][a-zA-Z0-9_:]*|up|scrape_[a-z_]+)(?![\w:\"'])")
_STRINGS = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'')


def metric_names(expr: str) -> set[str]:
    """The metric and recorded-series names a PromQL expression reads (fntax's and Prometheus's own)."""
    return set(_METRIC.findall(_STRINGS.sub('""', expr)))


def rule_groups(paths: Iterable[Path] = RULE_FILES) -> list[dict[str, object]]:
    groups: list[dict[str, object]] = []
    for path in paths:
        groups.extend(yaml.safe_load(path.read_text())["groups"])
    return groups


def recorded_names(paths: Iterable[Path] = RULE_FILES) -> set[str]:
    """Every series name a recording rule defines."""
    return {str(rule["record"]) for group in rule_groups(paths) for rule in group["rules"]  # type: ignore[attr-defined]
            if "record" in rule}


def rule_exprs(paths: Iterable[Path] = RULE_FILES) -> dict[str, str]:
    """Rule name (record or alert) -> expression."""
    return {str(rule.get("record") or rule.get("alert")): str(rule["expr"])  # type: ignore[attr-defined]
            for group in rule_groups(paths) for rule in group["rules"]}  # type: ignore[attr-defined]


def pending_in(expr: str) -> set[str]:
    """Pending agent metrics an expression reads directly or through recorded series."""
    found: set[str] = set()
    exprs = rule_exprs()
    todo, seen = list(metric_names(expr)), set()
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        if name in PENDING_METRICS:
            found.add(name)
        elif name in exprs and ":" in name:
            todo.extend(metric_names(exprs[name]))
    return found
