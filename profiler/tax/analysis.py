"""From captures to answers: tax per run, baseline, cost, percentiles.

The tax, baseline and cost blocks describe one invocation (the mean over the
measured runs); `runs` lists each run; `percentiles` give the cold-start
shape with --repeat.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from profiler.tax.baseline import BUILTIN, Baseline
from profiler.capture.run import summarise
from profiler.tax.cost import Cost, PriceTable, compute_cost, cost_json
from profiler.errors import InputError
from profiler.model import Capture
from profiler.output.report import capture_json
from profiler.tax.stats import percentiles
from profiler.tax.compute import CATEGORIES, BaremetalBaseline, HostCosts, Tax, baremetal, compute_tax


@dataclass(frozen=True)
class RunResult:
    capture: Capture
    tax: Tax
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
        return statistics.fmean(r.tax.seconds for r in self.runs)

    def mean_category(self, name: str) -> float:
        return statistics.fmean(r.tax.by_category[name] for r in self.runs)

    @property
    def observer_seconds(self) -> float:
        return statistics.fmean(r.tax.observer_seconds for r in self.runs)

    @property
    def own_work_seconds(self) -> float:
        return statistics.fmean(r.tax.own_work_seconds for r in self.runs)

    @property
    def cpu_share_wait_seconds(self) -> float:
        return statistics.fmean(r.tax.cpu_share_wait_seconds for r in self.runs)


def analyse(captures: Sequence[Capture], warmup: int, costs: HostCosts, prices: PriceTable,
            memory_mb: int, baseline: Baseline | None = None) -> Analysis:
    if len(captures) <= warmup:
        raise InputError("no measured run completed (all runs were warm-up or the capture was interrupted)")
    results = tuple(
        RunResult(capture=c, tax=(tax := compute_tax(c.workload, costs, c.probe_mean_ns,
                                                     throttled_seconds=c.throttled_ns / 1e9)),
                  baremetal=baremetal(c.workload, tax, costs))
        for c in captures
    )
    measured = results[warmup:]
    if baseline is None:
        base_name, base_kind = BUILTIN, "model"
        base_seconds = statistics.fmean(r.baremetal.seconds for r in measured)
        base_categories: Mapping[str, float] = {c: 0.0 for c in CATEGORIES}
    else:
        base_name, base_kind = baseline.name, baseline.kind
        base_seconds = baseline.seconds
        base_categories = baseline.by_category
    per_run = [compute_cost(r.duration_seconds, r.tax.seconds, base_seconds, memory_mb, prices)
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


def _tax_json(tax_by_category: Mapping[str, float], seconds: float, billed: float, observer: float,
              estimated: Sequence[str], own_work: float, share_wait: float) -> dict[str, Any]:
    return {
        "seconds": seconds,
        "ratio": seconds / billed if billed > 0 else 0.0,
        "own_work_seconds": own_work,
        "observer_seconds": observer,
        "cpu_share_wait_seconds": share_wait,
        "by_category": {name: tax_by_category[name] for name in CATEGORIES},
        "estimated": list(estimated),
    }


def _run_json(index: int, result: RunResult, warmup: bool) -> dict[str, Any]:
    w = result.capture.workload
    return {
        "run": index,
        "warmup": warmup,
        "pid": result.capture.pid,
        "exit_code": result.capture.exit_code,
        "duration_seconds": result.duration_seconds,
        "oncpu_seconds": w.counters.oncpu_ns / 1e9,
        "tax_seconds": result.tax.seconds,
        "observer_seconds": result.tax.observer_seconds,
        "cpu_share_wait_seconds": result.tax.cpu_share_wait_seconds,
        "by_category": dict(result.tax.by_category),
        "baremetal_seconds": result.baremetal.seconds,
    }


def analysis_json(analysis: Analysis) -> dict[str, Any]:
    """The full capture JSON (version 1): the capture keys plus tax, baseline, cost, runs, percentiles."""
    measured = analysis.runs
    first = measured[0].capture
    if len(measured) == 1:
        data = capture_json(first)
    else:
        # The workload block sums every measured invocation; per_process
        # lists every process of every measured run.
        merged = summarise([p for r in measured for p in r.capture.per_process],
                           sum(int(r.duration_seconds * 1e9) for r in measured))
        data = capture_json(first)
        combined = capture_json(Capture(
            command=first.command, pid=first.pid, exit_code=first.exit_code, host=first.host,
            workload=merged, per_process=tuple(p for r in measured for p in r.capture.per_process),
            map_update_failures=measured[-1].capture.map_update_failures,
            stop_signal=measured[-1].capture.stop_signal))
        data["workload"] = combined["workload"]
        data["per_process"] = combined["per_process"]
        data["exit_code"] = measured[-1].capture.exit_code
        data["interrupted"] = measured[-1].capture.interrupted
    data["invocations"] = len(measured)
    data["warmup"] = len(analysis.warmup)
    by_category = {name: analysis.mean_category(name) for name in CATEGORIES}
    data["tax"] = _tax_json(by_category, analysis.tax_seconds, analysis.cost.billed_seconds,
                            analysis.observer_seconds, measured[0].tax.estimated,
                            analysis.own_work_seconds, analysis.cpu_share_wait_seconds)
    data["baseline"] = {
        "name": analysis.baseline_name,
        "kind": analysis.baseline_kind,
        "seconds": analysis.baseline_seconds,
        "speedup": analysis.duration_seconds / analysis.baseline_seconds if analysis.baseline_seconds > 0 else None,
        "difference_by_category": {name: by_category[name] - analysis.baseline_by_category.get(name, 0.0)
                                   for name in CATEGORIES},
    }
    data["cost"] = {**cost_json(analysis.cost), "prices": analysis.prices.name}
    data["runs"] = ([_run_json(i, r, True) for i, r in enumerate(analysis.warmup)]
                    + [_run_json(len(analysis.warmup) + i, r, False) for i, r in enumerate(measured)])
    durations = [r.duration_seconds for r in measured]
    data["percentiles"] = {
        "duration_seconds": percentiles(durations),
        "tax_seconds": percentiles([r.tax.seconds for r in measured]),
        **{f"{name}_seconds": percentiles([r.tax.by_category[name] for r in measured])
           for name in CATEGORIES},
    }
    return data
