"""From captures to answers: tax per run, baseline, cost, percentiles.

The tax, baseline and cost blocks describe one invocation (the mean over the
measured runs); `runs` lists each run; `percentiles` give the cold-start
shape with --repeat.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

from profiler.tax.baseline import BUILTIN, Baseline
from profiler.model import summarise
from profiler.errors import InputError
from profiler.figures import CATEGORIES, ONCPU
from profiler.model import NS_PER_SECOND, Capture
from profiler.tax.compute import BaremetalBaseline, HostCosts, Tax, WallTax, baremetal, compute_tax, wall_tax
from profiler.tax.cost import Cost, PriceTable, compute_cost
from profiler.tax.result import BaselineSummary, ProfileResult, RunRow, TaxSummary, WallSummary
from profiler.tax.stats import percentiles


@dataclass(frozen=True)
class RunResult:
    capture: Capture
    tax: Tax  # the CPU view
    wall: WallTax  # the wall view (billed)
    baremetal: BaremetalBaseline

    @property
    def duration_seconds(self) -> float:
        return self.capture.workload.wall_seconds


@dataclass(frozen=True)
class Analysis:
    warmup: tuple[RunResult, ...]
    runs: tuple[RunResult, ...]  # measured runs
    memory_mb: int
    prices: PriceTable
    baseline_name: str
    baseline_kind: str
    baseline_seconds: float
    baseline_by_category: Mapping[str, float]
    cost: Cost

    @property
    def duration_seconds(self) -> float:
        return statistics.fmean(r.duration_seconds for r in self.runs)

    @property
    def tax_seconds(self) -> float:
        """The mean invocation's tax in billed wall time."""
        return statistics.fmean(r.wall.seconds for r in self.runs)

    def mean_category(self, name: str) -> float:
        """CPU view: seconds summed over the workload's tasks."""
        return statistics.fmean(r.tax.by_category[name] for r in self.runs)

    def mean_wall_category(self, name: str) -> float:
        return statistics.fmean(r.wall.by_category[name] for r in self.runs)

    def mean(self, value: Callable[[RunResult], float]) -> float:
        return statistics.fmean(value(r) for r in self.runs)

    @property
    def observer_seconds(self) -> float:
        return statistics.fmean(r.tax.observer_seconds for r in self.runs)

    @property
    def own_work_seconds(self) -> float:
        return statistics.fmean(r.tax.own_work_seconds for r in self.runs)

    @property
    def cpu_share_wait_seconds(self) -> float:
        return statistics.fmean(r.tax.cpu_share_wait_seconds for r in self.runs)


def _run(capture: Capture, costs: HostCosts) -> RunResult:
    tax = compute_tax(capture.workload, costs, capture.probe_mean_ns, quota=capture.cpu_share is not None,
                      throttled_seconds=capture.throttled_ns / NS_PER_SECOND)
    wall = wall_tax(tax, capture.timeline, capture.workload.wall_seconds)
    return RunResult(capture=capture, tax=tax, wall=wall,
                     baremetal=baremetal(capture.workload, tax, wall, costs, capture.cpu_share))


def analyse(captures: Sequence[Capture], warmup: int, costs: HostCosts, prices: PriceTable,
            memory_mb: int, baseline: Baseline | None = None) -> Analysis:
    if len(captures) <= warmup:
        raise InputError("no measured run completed (all runs were warm-up or the capture was interrupted)")
    results = tuple(_run(c, costs) for c in captures)
    measured = results[warmup:]
    if baseline is None:
        base_name, base_kind = BUILTIN, "model"
        base_seconds = statistics.fmean(r.baremetal.seconds for r in measured)
        base_categories: Mapping[str, float] = {c: 0.0 for c in CATEGORIES}
    else:
        base_name, base_kind = baseline.name, baseline.kind
        base_seconds = baseline.seconds
        base_categories = baseline.by_category
    per_run = [compute_cost(r.duration_seconds, r.wall.seconds, base_seconds, memory_mb, prices)
               for r in measured]
    cost = Cost(
        memory_mb=memory_mb,
        billed_seconds=statistics.fmean(c.billed_seconds for c in per_run),
        per_invocation_dollars=statistics.fmean(c.per_invocation_dollars for c in per_run),
        per_million_dollars=statistics.fmean(c.per_million_dollars for c in per_run),
        tax_per_million_dollars=statistics.fmean(c.tax_per_million_dollars for c in per_run),
        baseline_per_million_dollars=per_run[0].baseline_per_million_dollars,
    )
    return Analysis(warmup=results[:warmup], runs=measured, memory_mb=memory_mb, prices=prices,
                    baseline_name=base_name, baseline_kind=base_kind, baseline_seconds=base_seconds,
                    baseline_by_category=base_categories, cost=cost)


def _run_row(index: int, result: RunResult, warmup: bool) -> RunRow:
    return RunRow(run=index, warmup=warmup, pid=result.capture.pid, exit_code=result.capture.exit_code,
                  duration_seconds=result.duration_seconds,
                  oncpu_seconds=float(result.capture.workload.counters.value(ONCPU)),
                  tax_seconds=result.wall.seconds, observer_seconds=result.tax.observer_seconds,
                  cpu_share_wait_seconds=result.tax.cpu_share_wait_seconds,
                  by_category=dict(result.tax.by_category), baremetal_seconds=result.baremetal.seconds,
                  cpu_tax_seconds=result.tax.seconds, wall_by_category=dict(result.wall.by_category),
                  blocked_seconds=result.wall.blocked_seconds)


def to_result(analysis: Analysis, cpu_share: float | None = None) -> ProfileResult:
    """The typed result of a session: the captures' figures plus tax, baseline, cost, runs, percentiles.

    The workload block sums every measured invocation; per_process lists
    every process of every measured run; tax, baseline and cost describe the
    mean invocation."""
    measured = analysis.runs
    first, last = measured[0].capture, measured[-1].capture
    processes = tuple(p for r in measured for p in r.capture.per_process)
    workload = first.workload if len(measured) == 1 else \
        summarise(processes, sum(int(r.duration_seconds * NS_PER_SECOND) for r in measured))
    by_category = {name: analysis.mean_category(name) for name in CATEGORIES}
    billed = analysis.cost.billed_seconds
    mean = analysis.mean
    oncpu = mean(lambda r: r.tax.oncpu_seconds)
    wall = WallSummary(
        wall_seconds=mean(lambda r: r.wall.wall_seconds), busy_seconds=mean(lambda r: r.wall.busy_seconds),
        waiting_cpu_seconds=mean(lambda r: r.wall.waiting_cpu_seconds),
        waiting_share_seconds=mean(lambda r: r.wall.waiting_share_seconds),
        blocked_seconds=mean(lambda r: r.wall.blocked_seconds),
        own_work_seconds=mean(lambda r: r.wall.own_work_seconds),
        observer_seconds=mean(lambda r: r.wall.observer_seconds),
        measured=all(r.wall.measured for r in measured),
        lock_misses=sum(r.capture.timeline.lock_misses for r in measured if r.capture.timeline))
    tax = TaxSummary(seconds=analysis.tax_seconds, ratio=analysis.tax_seconds / billed if billed > 0 else 0.0,
                     own_work_seconds=analysis.own_work_seconds, observer_seconds=analysis.observer_seconds,
                     cpu_share_wait_seconds=analysis.cpu_share_wait_seconds, by_category=by_category,
                     estimated=tuple(measured[0].tax.estimated),
                     cpu_seconds=sum(by_category.values()),
                     cpu_ratio=mean(lambda r: r.tax.oncpu_tax_seconds) / oncpu if oncpu > 0 else 0.0,
                     wall_by_category={name: analysis.mean_wall_category(name) for name in CATEGORIES},
                     wall=wall, estimate_scale=min(r.tax.estimate_scale for r in measured),
                     unsteady=tuple(measured[0].tax.unsteady),
                     cgroup_throttled_seconds=mean(lambda r: r.capture.throttled_ns / NS_PER_SECOND)
                     if cpu_share is not None else None)
    baseline = BaselineSummary(
        name=analysis.baseline_name, kind=analysis.baseline_kind, seconds=analysis.baseline_seconds,
        speedup=analysis.duration_seconds / analysis.baseline_seconds if analysis.baseline_seconds > 0 else None,
        difference_by_category={name: by_category[name] - analysis.baseline_by_category.get(name, 0.0)
                                for name in CATEGORIES},
        whole_cpu_seconds=mean(lambda r: r.baremetal.whole_cpu_seconds) if analysis.baseline_kind == "model"
        else None,
        cpu_share=cpu_share if analysis.baseline_kind == "model" else None,
        parallelism=mean(lambda r: r.baremetal.parallelism) if analysis.baseline_kind == "model" else None,
        blocked_seconds=mean(lambda r: r.baremetal.blocked_seconds) if analysis.baseline_kind == "model"
        else None)
    runs = tuple([_run_row(i, r, True) for i, r in enumerate(analysis.warmup)]
                 + [_run_row(len(analysis.warmup) + i, r, False) for i, r in enumerate(measured)])
    percentile_rows = {
        "duration_seconds": percentiles([r.duration_seconds for r in measured]),
        "tax_seconds": percentiles([r.wall.seconds for r in measured]),
        **{f"{name}_seconds": percentiles([r.wall.by_category[name] for r in measured]) for name in CATEGORIES},
    }
    return ProfileResult(
        command=first.command, pid=first.pid, exit_code=last.exit_code, interrupted=last.interrupted,
        host=first.host, workload=workload, per_process=first.per_process if len(measured) == 1 else processes,
        map_update_failures=dict(last.map_update_failures), invocations=len(measured),
        warmup=len(analysis.warmup), tax=tax, baseline=baseline, cost=analysis.cost, prices=analysis.prices.name,
        runs=runs, percentiles=percentile_rows, cpu_share=cpu_share,
        probe_misses={probe: sum(r.capture.probe_misses.get(probe, 0) for r in measured)
                      for probe in sorted({p for r in measured for p in r.capture.probe_misses})})
