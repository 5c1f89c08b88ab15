"""Prometheus metrics of the agent: one collector, fresh families per scrape.

Naming: `fntax_` prefix, base units, counters end in `_total`, help on every
metric. Workload labels are `function` and `kind` (process, container, vm);
because `kind` names the workload kind, the split of switches and interrupts
uses `type` (voluntary/involuntary, hard/soft). Never a pid, command line or
environment value as a label.
"""

from __future__ import annotations

import resource
import time
from dataclasses import dataclass, field
from typing import Callable, Iterator, Mapping, Sequence

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from profiler.ledger.functions import FunctionView
from profiler.model import NS_PER_SECOND, WorkloadSummary
from profiler.tax.compute import CATEGORIES, HostCosts, compute_tax

LABEL_FUNCTION = "function"
LABEL_KIND = "kind"
LABEL_CATEGORY = "category"
LABEL_SYSCALL = "syscall"
LABEL_LIBRARY = "library"
LABEL_TYPE = "type"
LABEL_MODE = "mode"
LABEL_PROBE = "probe"
LABEL_MAP = "map"
FN = [LABEL_FUNCTION, LABEL_KIND]


@dataclass(frozen=True)
class SelfStats:
    """The agent's own state at one moment."""

    probes_attached: Sequence[str]
    probe_runs: Mapping[str, tuple[int, int]]  # probe -> (runs, run ns)
    map_entries: Mapping[str, int]
    map_capacity: Mapping[str, int]
    map_update_failures: Mapping[str, int]
    collect_errors: int = 0


@dataclass
class AgentSource:
    """What the collector reads; callables so each scrape sees fresh state."""

    functions: Callable[[], list[FunctionView]]
    self_stats: Callable[[], SelfStats]
    costs: HostCosts
    gb_second_price: float
    default_memory_mb: int = 128
    errors: list[int] = field(default_factory=lambda: [0])
    last_scrape_seconds: list[float] = field(default_factory=lambda: [0.0])


def _s(ns: int) -> float:
    return ns / NS_PER_SECOND


class FntaxCollector(Collector):
    def __init__(self, source: AgentSource) -> None:
        self.source = source

    def describe(self) -> list[Metric]:
        return []  # no scrape at registration

    def collect(self) -> Iterator[Metric]:
        """The agent's self-metrics (the per-function ones: render_functions)."""
        try:
            yield from self._self()
        except Exception:  # collect() must never raise: count it instead
            self.source.errors[0] += 1

    def _self(self) -> Iterator[Metric]:
        stats = self.source.self_stats()
        attached = GaugeMetricFamily("fntax_probe_attached", "1 for each attached probe.", labels=[LABEL_PROBE])
        for probe in stats.probes_attached:
            attached.add_metric([probe], 1)
        sampled = " Counted only while the agent samples BPF statistics (see --help)."
        runs = CounterMetricFamily("fntax_probe_runs", "Probe program runs (kernel BPF statistics)." + sampled,
                                   labels=[LABEL_PROBE])
        run_s = CounterMetricFamily("fntax_probe_run_seconds",
                                    "Probe program run time (kernel BPF statistics)." + sampled, labels=[LABEL_PROBE])
        mean = GaugeMetricFamily("fntax_probe_mean_run_seconds", "Mean run time of each probe program.",
                                 labels=[LABEL_PROBE])
        for probe, (count, ns) in stats.probe_runs.items():
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
        usage = resource.getrusage(resource.RUSAGE_SELF)
        cpu = CounterMetricFamily("fntax_agent_cpu_seconds", "CPU time the agent itself used.")
        cpu.add_metric([], usage.ru_utime + usage.ru_stime)
        rss = GaugeMetricFamily("fntax_agent_resident_memory_bytes", "The agent's resident memory.")
        rss.add_metric([], _rss_bytes())
        errors = CounterMetricFamily("fntax_collect_errors", "Scrapes whose collection failed in part.")
        errors.add_metric([], self.source.errors[0])
        duration = GaugeMetricFamily("fntax_scrape_duration_seconds",
                                     "How long the previous scrape of the agent took.")
        duration.add_metric([], self.source.last_scrape_seconds[0])
        yield from (attached, runs, run_s, mean, entries, capacity, failures, cpu, rss, errors, duration)


def _rss_bytes() -> int:
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * resource.getpagesize()
    except OSError:
        return 0


# Per-function families, rendered straight to the text exposition format:
# prometheus_client's generic path takes ~0.5 s for 30,000 series, ten times
# the scrape budget. Label values are already bounded and sanitised
# (attribution._label, syscall and library names), so escaping is a no-op
# guard here.
_FUNCTION_FAMILIES: tuple[tuple[str, str, str], ...] = (
    ("fntax_syscalls_total", "counter", "Syscalls made by the function's processes."),
    ("fntax_syscall_seconds_total", "counter", "Time inside syscalls, entry to exit."),
    ("fntax_context_switches_total", "counter", "Context switches, voluntary or involuntary."),
    ("fntax_runqueue_wait_seconds_total", "counter", "Time runnable but waiting for a CPU."),
    ("fntax_oncpu_seconds_total", "counter", "Time on a CPU."),
    ("fntax_page_faults_total", "counter", "Page faults by type (minor, major)."),
    ("fntax_page_fault_exceptions_total", "counter", "Page-fault exceptions by the mode they hit in (user, kernel)."),
    ("fntax_irq_seconds_total", "counter", "Interrupt time charged to the function (hard, soft)."),
    ("fntax_decompression_seconds_total", "counter", "Time inside decompressors."),
    ("fntax_tax_seconds_total", "counter", "Instruction tax by category (see the README's tax model)."),
    ("fntax_tax_dollars_total", "counter", "Tax seconds x memory GB x price per GB-second."),
    ("fntax_syscalls_by_name_total", "counter", "Syscalls by name: each function's top K, then other."),
)


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def render_functions(views: Sequence[FunctionView], source: AgentSource) -> bytes:
    lines: dict[str, list[str]] = {name: [] for name, _t, _h in _FUNCTION_FAMILIES}
    price = source.gb_second_price
    for view in views:
        base = f'function="{_escape(view.function)}",kind="{view.kind.value}"'
        c = view.counters
        lines["fntax_syscalls_total"].append(f"{{{base}}} {c.syscalls}")
        lines["fntax_syscall_seconds_total"].append(f"{{{base}}} {_s(c.syscall_ns)!r}")
        lines["fntax_context_switches_total"] += [f'{{{base},type="voluntary"}} {c.voluntary_switches}',
                                                  f'{{{base},type="involuntary"}} {c.involuntary_switches}']
        lines["fntax_runqueue_wait_seconds_total"].append(f"{{{base}}} {_s(c.runqueue_ns)!r}")
        lines["fntax_oncpu_seconds_total"].append(f"{{{base}}} {_s(c.oncpu_ns)!r}")
        lines["fntax_page_faults_total"] += [f'{{{base},type="minor"}} {c.faults_minor}',
                                             f'{{{base},type="major"}} {c.faults_major}']
        lines["fntax_page_fault_exceptions_total"] += [f'{{{base},mode="user"}} {c.faults_user}',
                                                       f'{{{base},mode="kernel"}} {c.faults_kernel}']
        lines["fntax_irq_seconds_total"] += [f'{{{base},type="hard"}} {_s(c.hardirq_ns)!r}',
                                             f'{{{base},type="soft"}} {_s(c.softirq_ns)!r}']
        for lib, stats in view.decompression_by_library.items():
            lines["fntax_decompression_seconds_total"].append(f'{{{base},library="{_escape(lib)}"}} {_s(stats.ns)!r}')
        for name, stats in view.syscalls_by_name.items():
            lines["fntax_syscalls_by_name_total"].append(f'{{{base},syscall="{_escape(name)}"}} {stats.count}')
        summary = WorkloadSummary(0.0, view.processes, c, view.syscalls_by_name, view.decompression_by_library)
        tax = compute_tax(summary, source.costs)
        for category in CATEGORIES:
            lines["fntax_tax_seconds_total"].append(
                f'{{{base},category="{category}"}} {tax.by_category[category]!r}')
        memory_gb = (view.memory_mb or source.default_memory_mb) / 1024
        lines["fntax_tax_dollars_total"].append(f"{{{base}}} {tax.seconds * memory_gb * price!r}")
    out: list[str] = []
    for name, kind, doc in _FUNCTION_FAMILIES:
        out.append(f"# HELP {name} {doc}\n# TYPE {name} {kind}\n")
        out.extend(f"{name}{line}\n" for line in lines[name])
    return "".join(out).encode()
