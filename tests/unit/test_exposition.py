"""The hand-rendered exposition, read back by prometheus_client's own parser (no kernel)."""

from __future__ import annotations

import re

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import CollectorRegistry

from profiler.attribution.rules import WorkloadKind
from profiler.bpf.loader import Attached, probe_label
from profiler.figures import FIGURES
from profiler.ledger.functions import FunctionView
from profiler.model import CallStats, Counters
from profiler.output.exposition import AgentSource, FntaxCollector, SelfStats, function_families, render_functions
from profiler.tax.compute import HostCosts
from profiler.tax.function_tax import TaxLedger

_NAME = re.compile(r"^[a-z_][a-z0-9_]*$")


def _text() -> str:
    views = [FunctionView(f"fn-{i}", WorkloadKind.PROCESS, 512, 2,
                          Counters(list(range(1 + i, len(FIGURES) + 1 + i))),
                          {"read": CallStats(5, 5000), "other": CallStats(1, 10)},
                          {"libz": CallStats(2, 1_000_000, 900_000)}, 3) for i in range(3)]
    taxed = TaxLedger(HostCosts(1e-6, 2e-6, 1e-7, 1e-9), 0.0000166667, 128).update(views, {})
    attached = Attached()
    for program, point in (("tracepoint__sched__sched_switch", "sched:sched_switch"),
                           ("raw_tracepoint__sys_enter", "sys_enter"),
                           ("fntax_decomp_enter_0", "libz:inflate")):
        attached.add(program, point)
    runs = {probe_label(p): (10, 1000) for p in ("tracepoint__sched__sched_switch", "raw_tracepoint__sys_enter",
                                                  "fntax_decomp_enter_0")}
    stats = SelfStats({k: len(v) for k, v in attached.points.items()}, runs, {"procs": 3}, {"procs": 16384},
                      {"procs": 0}, events_lost=0)
    registry = CollectorRegistry()
    registry.register(FntaxCollector(AgentSource(lambda: stats)))
    return (render_functions(taxed) + generate_latest(registry)).decode()


def test_every_family_parses_with_help_type_and_conventional_names() -> None:
    families = list(text_string_to_metric_families(_text()))
    assert families
    for family in families:
        assert family.documentation, family.name
        assert family.type in ("counter", "gauge", "info"), family.name
        assert _NAME.match(family.name), family.name
        assert family.name.startswith(("fntax_", "process_")), family.name
        if family.type == "counter":
            assert all(s.name.endswith(("_total", "_created")) for s in family.samples), family.name
        for sample in family.samples:
            assert "pid" not in sample.labels and "cmdline" not in sample.labels, sample


def test_every_declared_family_is_exported() -> None:
    exported = {f.name for f in text_string_to_metric_families(_text())}
    for family in function_families():
        assert family.name.removesuffix("_total") in exported, family.name


def test_one_name_per_probe_across_self_metrics() -> None:
    by_family: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(_text()):
        for sample in family.samples:
            if "probe" in sample.labels:
                by_family.setdefault(family.name, set()).add(sample.labels["probe"])
    assert by_family["fntax_probe_attached"] == by_family["fntax_probe_runs"] == by_family["fntax_probe_run_seconds"]
    assert {"sched:sched_switch", "sys_enter", "decomp_enter_libz"} == by_family["fntax_probe_attached"]
