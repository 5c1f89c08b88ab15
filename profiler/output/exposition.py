"""Prometheus exposition of the agent: it renders a finished view, nothing more.

Per-function families come from the figure table (one family per declared
metric, its figures told apart by the family's label), the call tables and
the tax layer's accumulated tax; they are rendered straight to the text
format (prometheus_client's generic path takes ~0.5 s for 30,000 series,
ten times the scrape budget). Self-metrics go through a regular collector.

Naming: `fntax_` prefix, base units, counters end in `_total`, help on every
metric. Workload labels are `function` and `kind`; never a pid, command line
or environment value as a label.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Callable, Iterator, Mapping, Sequence

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

from profiler.figures import (
    KVM_EXIT_TIME,
    KVM_USERSPACE_TIME,
    VCPU_WAIT,
    CATEGORIES,
    DECOMPRESSION_BY_LIBRARY,
    FIGURES,
    KVM_EXITS_BY_REASON,
    KVM_FIGURES,
    KVM_TABLES,
    KVM_USERSPACE_EXITS_BY_REASON,
    LABEL_CATEGORY,
    LABEL_FUNCTION,
    LABEL_KIND,
    LABEL_MAP,
    LABEL_PROBE,
    NS_PER_SECOND,
    INVOCATIONS,
    PROCESSES_STARTED,
    SYSCALLS_BY_NAME,
    TAX_DOLLARS,
    TAX_SECONDS,
    CallTable,
    Family,
)
from profiler.attribution.rules import WorkloadKind
from profiler.model import CallStats
from profiler.system.host import cpu_model
from profiler.tax.function_tax import TaxedFunction
from profiler.tax.virtualization import KVM_GROUPS, Visibility, has_kvm_activity, visibility


@dataclass(frozen=True)
class SelfStats:
    """The agent's own state at one moment."""

    probes_attached: Mapping[str, int]  # probe label -> attach points
    probe_runs: Mapping[str, tuple[int, int]]  # probe label -> (runs, run ns)
    map_entries: Mapping[str, int]
    map_capacity: Mapping[str, int]
    map_update_failures: Mapping[str, int]
    events_lost: int = 0


@dataclass
class AgentSource:
    """What the self-metrics collector reads; a callable so each scrape sees fresh state."""

    self_stats: Callable[[], SelfStats]
    errors: list[int] = field(default_factory=lambda: [0])
    last_scrape_seconds: list[float] = field(default_factory=lambda: [0.0])


def _s(ns: int) -> float:
    return ns / NS_PER_SECOND


class FntaxCollector(Collector):
    """The agent's self-metrics, one consistent read per scrape."""

    def __init__(self, source: AgentSource) -> None:
        self.source = source
        # The library's own reader of this process's CPU and memory.
        self._process = ProcessCollector(registry=None)
        # Which kernel and CPU the figures come from: a fleet compares one
        # function's tax across kernels by joining on this (deploy/prometheus/rules/fntax-fleet.yaml).
        self._host = (os.uname().release, cpu_model())

    def describe(self) -> list[Metric]:
        return []  # no scrape at registration

    def collect(self) -> Iterator[Metric]:
        try:
            yield from self._self()
        except Exception:  # collect() must never raise: count it instead
            self.source.errors[0] += 1

    def _self(self) -> Iterator[Metric]:
        stats = self.source.self_stats()
        attached = GaugeMetricFamily("fntax_probe_attached", "Attachment points of each probe program.",
                                     labels=[LABEL_PROBE])
        for probe, points in sorted(stats.probes_attached.items()):
            attached.add_metric([probe], points)
        sampled = " Counted only while the agent samples BPF statistics (see --help)."
        runs = CounterMetricFamily("fntax_probe_runs", "Probe program runs (kernel BPF statistics)." + sampled,
                                   labels=[LABEL_PROBE])
        run_s = CounterMetricFamily("fntax_probe_run_seconds",
                                    "Probe program run time (kernel BPF statistics)." + sampled, labels=[LABEL_PROBE])
        mean = GaugeMetricFamily("fntax_probe_mean_run_seconds", "Mean run time of each probe program.",
                                 labels=[LABEL_PROBE])
        for probe, (count, ns) in sorted(stats.probe_runs.items()):
            runs.add_metric([probe], count)
            run_s.add_metric([probe], _s(ns))
            if count:
                mean.add_metric([probe], _s(ns) / count)
        entries = GaugeMetricFamily("fntax_map_entries", "Entries in each bounded BPF map.", labels=[LABEL_MAP])
        capacity = GaugeMetricFamily("fntax_map_capacity", "Capacity of each bounded BPF map.", labels=[LABEL_MAP])
        for name, value in stats.map_entries.items():
            entries.add_metric([name], value)
        for name, value in stats.map_capacity.items():
            capacity.add_metric([name], value)
        failures = CounterMetricFamily("fntax_map_update_failures", "BPF map updates that failed (map full).",
                                       labels=[LABEL_MAP])
        for name, value in stats.map_update_failures.items():
            failures.add_metric([name], value)
        lost = CounterMetricFamily("fntax_events_lost", "Process events (fork, exec) the perf buffer dropped.")
        lost.add_metric([], stats.events_lost)
        process = {m.name: m for m in self._process.collect()}
        cpu = CounterMetricFamily("fntax_agent_cpu_seconds", "CPU time the agent itself used.")
        cpu.add_metric([], _sample(process, "process_cpu_seconds"))
        rss = GaugeMetricFamily("fntax_agent_resident_memory_bytes", "The agent's resident memory.")
        rss.add_metric([], _sample(process, "process_resident_memory_bytes"))
        errors = CounterMetricFamily("fntax_collect_errors", "Scrapes whose collection failed in part.")
        errors.add_metric([], self.source.errors[0])
        duration = GaugeMetricFamily("fntax_scrape_duration_seconds",
                                     "How long the previous scrape of the agent took.")
        duration.add_metric([], self.source.last_scrape_seconds[0])
        host = GaugeMetricFamily("fntax_host_info", "The host's kernel release and CPU model (always 1).",
                                 labels=["kernel", "cpu_model"])
        host.add_metric(list(self._host), 1)
        yield from (attached, runs, run_s, mean, entries, capacity, failures, lost, cpu, rss, errors, duration, host)
        yield from process.values()


def _sample(families: Mapping[str, Metric], name: str) -> float:
    family = families.get(name)
    return float(family.samples[0].value) if family is not None and family.samples else 0.0


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _number(value: float | int) -> str:
    return repr(value) if isinstance(value, float) else str(value)


# Whether this host measured a KVM figure of a VM (1 measured, 0.5 partial, 0
# unavailable; figures with nothing to judge by are left out): a missing
# figure is said, never shown as a zero that looks measured.
KVM_MEASURED = Family("fntax_kvm_figure_measured",
                      "KVM figures this host lets fntax measure for a VM: 1 measured, 0.5 partial, 0 unavailable "
                      "(kvm_exit is silent on nested and PVM hosts).", "figure")
_STATE_VALUE = {Visibility.MEASURED: 1.0, Visibility.PARTIAL: 0.5, Visibility.UNAVAILABLE: 0.0}


def _tables() -> list[CallTable]:
    return [SYSCALLS_BY_NAME, DECOMPRESSION_BY_LIBRARY, *(t for t in KVM_TABLES if t.family is not None)]


def function_families() -> list[Family]:
    """Every per-function family, in exposition order (derived from the figure table)."""
    families: list[Family] = []
    for figure in FIGURES:
        if figure.family is not None and figure.family not in families:
            families.append(figure.family)
    tables = [t.family for t in _tables() if t.family is not None]
    return [*families, *tables, KVM_MEASURED, PROCESSES_STARTED, INVOCATIONS, TAX_SECONDS, TAX_DOLLARS]


# One sample of a function: (family name, labels inside the braces, value).
Sample = tuple[str, str, str]
# Per function, the (family, labels) of every series last served.
Shown = Mapping[str, tuple[tuple[str, str], ...]]


def _calls(table: CallTable, base: str, calls: Mapping[str, CallStats], out: list[Sample]) -> None:
    family = _name(table)
    for name, stats in calls.items():
        value: float | int = stats.count if table.exported == "count" else _s(stats.ns)
        out.append((family, f'{base},{table.label}="{_escape(name)}"', _number(value)))


def _name(table: CallTable) -> str:
    assert table.family is not None
    return table.family.name


# Which visibility group (profiler.tax.virtualization) a KVM figure's series belongs to.
_GROUP_OF: dict[str, str] = {KVM_EXIT_TIME.field: "exit_seconds", KVM_USERSPACE_TIME.field: "userspace_exit_seconds",
                             VCPU_WAIT.field: "vcpu_wait"}


_KVM_SET = frozenset(KVM_FIGURES)


def render_functions(functions: Sequence[TaxedFunction]) -> bytes:
    """The per-function families in the Prometheus text format."""
    return render_new_at_zero(functions, None)[0]


def _samples(taxed: TaxedFunction) -> list[Sample]:
    """Every sample of one function, in no particular order."""
    out: list[Sample] = []
    view = taxed.view
    base = f'{LABEL_FUNCTION}="{_escape(view.function)}",{LABEL_KIND}="{view.kind.value}"'
    # KVM series only for VMs (or a process that did KVM): bounded series per function.
    kvm = view.kind is WorkloadKind.VM or bool(view.kvm) or has_kvm_activity(view.counters)
    seen = visibility(view.counters) if kvm else None
    for figure, raw in view.counters.items():
        if figure.family is None:
            continue
        if figure in _KVM_SET:
            if seen is None:
                continue
            if seen.states.get(_GROUP_OF.get(figure.field, ""), None) is Visibility.UNAVAILABLE:
                continue  # not measurable here: no series rather than a zero
        labels = base if figure.label_value is None else f'{base},{figure.family.label}="{figure.label_value}"'
        out.append((figure.family.name, labels, _number(figure.value(raw))))
    _calls(SYSCALLS_BY_NAME, base, view.syscalls_by_name, out)
    _calls(DECOMPRESSION_BY_LIBRARY, base, view.decompression_by_library, out)
    if kvm:
        _calls(KVM_EXITS_BY_REASON, base, view.kvm.exits_by_reason, out)
        _calls(KVM_USERSPACE_EXITS_BY_REASON, base, view.kvm.userspace_exits_by_reason, out)
        assert seen is not None
        for group in KVM_GROUPS:
            state = seen.states.get(group)
            if state in _STATE_VALUE:
                assert state is not None
                out.append((KVM_MEASURED.name, f'{base},{KVM_MEASURED.label}="{group}"', repr(_STATE_VALUE[state])))
    out.append((PROCESSES_STARTED.name, base, str(view.processes_started)))
    if view.invocations is not None:
        out.append((INVOCATIONS.name, base, str(view.invocations)))
    for category in CATEGORIES:
        out.append((TAX_SECONDS.name, f'{base},{LABEL_CATEGORY}="{category}"',
                    repr(taxed.tax_by_category.get(category, 0.0))))
    out.append((TAX_DOLLARS.name, base, repr(taxed.tax_dollars)))
    return out


def render_new_at_zero(functions: Sequence[TaxedFunction],
                       shown: Shown | None) -> tuple[bytes, dict[str, tuple[tuple[str, str], ...]], bool]:
    """The per-function families; with `shown` (what the last body served), a
    counter series served for the first time is rendered at 0: a counter
    that first appears at 0 lets Prometheus count its first increase (a new
    function's first calls; after an agent restart, the reset).

    Returns the body, what it serves (the next call's `shown`) and whether it
    served a series for the first time. A function whose series are the same
    as last time (nearly all, at every scrape) is not checked series by series."""
    families = function_families()
    lines: dict[str, list[str]] = {f.name: [] for f in families}
    counter = {f.name: f.name.endswith("_total") for f in families}
    served: dict[str, tuple[tuple[str, str], ...]] = {}
    fresh = False
    for taxed in functions:
        samples = _samples(taxed)
        if shown is not None:
            series = tuple((family, labels) for family, labels, _value in samples)
            served[taxed.view.function] = series
            before = shown.get(taxed.view.function)
            if before != series:
                known = set(before or ())
                fresh = fresh or not known.issuperset(series)
                samples = [(family, labels, value if (family, labels) in known or not counter[family] else "0")
                           for family, labels, value in samples]
        for family, labels, value in samples:
            lines[family].append(f"{family}{{{labels}}} {value}\n")
    out: list[str] = []
    for fam in families:
        kind = "counter" if counter[fam.name] else "gauge"
        out.append(f"# HELP {fam.name} {fam.help}\n# TYPE {fam.name} {kind}\n")
        out.extend(lines[fam.name])
    return "".join(out).encode(), served, fresh
