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

from profiler.aggregate import FunctionView
from profiler.model import NS_PER_SECOND, WorkloadSummary
from profiler.tax import CATEGORIES, HostCosts, compute_tax

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


def _s(ns: int) -> float:
    return ns / NS_PER_SECOND


class FntaxCollector(Collector):
    def __init__(self, source: AgentSource) -> None:
        self.source = source
        self.last_scrape_seconds = 0.0

    def describe(self) -> list[Metric]:
        return []  # no scrape at registration

    def collect(self) -> Iterator[Metric]:
        started = time.perf_counter()
        try:
            yield from self._functions()
        except Exception:  # collect() must never raise: count it instead
            self.source.errors[0] += 1
        try:
            yield from self._self()
        except Exception:
            self.source.errors[0] += 1
        duration = GaugeMetricFamily("fntax_scrape_duration_seconds",
                                     "How long the previous scrape of the agent took.")
        duration.add_metric([], self.last_scrape_seconds)
        yield duration
        self.last_scrape_seconds = time.perf_counter() - started

    def _functions(self) -> Iterator[Metric]:
        views = self.source.functions()

        def counter(name: str, doc: str, extra: Sequence[str] = ()) -> CounterMetricFamily:
            return CounterMetricFamily(name, doc, labels=[*FN, *extra])

        syscalls = counter("fntax_syscalls", "Syscalls made by the function's processes.")
        syscall_s = counter("fntax_syscall_seconds", "Time inside syscalls, entry to exit.")
        switches = counter("fntax_context_switches", "Context switches, voluntary or involuntary.", [LABEL_TYPE])
        runqueue = counter("fntax_runqueue_wait_seconds", "Time runnable but waiting for a CPU.")
        oncpu = counter("fntax_oncpu_seconds", "Time on a CPU.")
        faults = counter("fntax_page_faults", "Page faults by type (minor, major).", [LABEL_TYPE])
        fault_mode = counter("fntax_page_fault_exceptions",
                             "Page-fault exceptions by the mode they hit in (user, kernel).", [LABEL_MODE])
        irq = counter("fntax_irq_seconds", "Interrupt time charged to the function (hard, soft).", [LABEL_TYPE])
        decomp = counter("fntax_decompression_seconds", "Time inside decompressors.", [LABEL_LIBRARY])
        decomp_calls = counter("fntax_decompression_calls", "Calls into decompressors.", [LABEL_LIBRARY])
        tax = counter("fntax_tax_seconds", "Instruction tax by category (see the README's tax model).",
                      [LABEL_CATEGORY])
        dollars = counter("fntax_tax_dollars", "Tax seconds x memory GB x price per GB-second.")
        by_name = counter("fntax_syscalls_by_name", "Syscalls by name: each function's top K, then other.",
                          [LABEL_SYSCALL])
        live = GaugeMetricFamily("fntax_function_processes", "Live processes of the function.", labels=FN)
        for view in views:
            labels = [view.function, view.kind.value]
            c = view.counters
            syscalls.add_metric(labels, c.syscalls)
            syscall_s.add_metric(labels, _s(c.syscall_ns))
            switches.add_metric([*labels, "voluntary"], c.voluntary_switches)
            switches.add_metric([*labels, "involuntary"], c.involuntary_switches)
            runqueue.add_metric(labels, _s(c.runqueue_ns))
            oncpu.add_metric(labels, _s(c.oncpu_ns))
            faults.add_metric([*labels, "minor"], c.faults_minor)
            faults.add_metric([*labels, "major"], c.faults_major)
            fault_mode.add_metric([*labels, "user"], c.faults_user)
            fault_mode.add_metric([*labels, "kernel"], c.faults_kernel)
            irq.add_metric([*labels, "hard"], _s(c.hardirq_ns))
            irq.add_metric([*labels, "soft"], _s(c.softirq_ns))
            for lib, stats in view.decompression_by_library.items():
                decomp.add_metric([*labels, lib], _s(stats.ns))
                decomp_calls.add_metric([*labels, lib], stats.count)
            for name, stats in view.syscalls_by_name.items():
                by_name.add_metric([*labels, name], stats.count)
            summary = WorkloadSummary(0.0, view.processes, c, view.syscalls_by_name,
                                      view.decompression_by_library)
            result = compute_tax(summary, self.source.costs)
            for category in CATEGORIES:
                tax.add_metric([*labels, category], result.by_category[category])
            memory_gb = (view.memory_mb or self.source.default_memory_mb) / 1024
            dollars.add_metric(labels, result.seconds * memory_gb * self.source.gb_second_price)
            live.add_metric(labels, view.processes)
        yield from (syscalls, syscall_s, switches, runqueue, oncpu, faults, fault_mode, irq, decomp,
                    decomp_calls, tax, dollars, by_name, live)

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
        yield from (attached, runs, run_s, mean, entries, capacity, failures, cpu, rss, errors)


def _rss_bytes() -> int:
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * resource.getpagesize()
    except OSError:
        return 0
