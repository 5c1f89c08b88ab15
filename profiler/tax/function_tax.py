"""The agent's per-function tax: the same model as `fntax profile`, kept monotonic.

Each fold, every function's figures have grown by some amount; the tax of
that growth is computed with `compute_tax` (the same function, the same
observer correction as a capture) and added to the function's running totals.
A counter never goes back: growth that is negative (a process re-attributed
away) counts as none, and when a function folds into `_exited` its running
totals move with it. Prometheus therefore never sees a tax or dollar counter
decrease, whatever the probes' mean run times do between folds.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Sequence

from profiler.figures import CATEGORIES
from profiler.ledger.functions import EXITED, FunctionView
from profiler.model import CallStats, Counters, WorkloadSummary, calls_growth
from profiler.tax.compute import HostCosts, compute_tax


@dataclass(frozen=True)
class TaxedFunction:
    """One function's figures and its accumulated tax, ready to render."""

    view: FunctionView
    tax_by_category: Mapping[str, float]
    tax_dollars: float


@dataclass
class _Running:
    counters: Counters = field(default_factory=Counters)
    decompression: dict[str, CallStats] = field(default_factory=dict)
    by_category: dict[str, float] = field(default_factory=lambda: {c: 0.0 for c in CATEGORIES})
    dollars: float = 0.0


class TaxLedger:
    def __init__(self, costs: HostCosts, gb_second_price: float, default_memory_mb: int) -> None:
        self.costs = costs
        self.price = gb_second_price
        self.default_memory_mb = default_memory_mb
        self._running: dict[str, _Running] = {}

    def update(self, views: Sequence[FunctionView], probe_mean_ns: Mapping[str, float]) -> list[TaxedFunction]:
        present = {v.function for v in views}
        for gone in [name for name in self._running if name not in present and name != EXITED]:
            # Folded into _exited: its figures and its tax go there together.
            sink = self._running.setdefault(EXITED, _Running())
            moved = self._running.pop(gone)
            sink.counters = sink.counters + moved.counters
            for lib, stats in moved.decompression.items():
                sink.decompression[lib] = sink.decompression.get(lib, CallStats()) + stats
            for category, seconds in moved.by_category.items():
                sink.by_category[category] += seconds
            sink.dollars += moved.dollars
        out = []
        for view in views:
            running = self._running.get(view.function)
            if running is None:
                running = self._running[view.function] = _Running()
            if view.counters == running.counters and view.decompression_by_library == running.decompression:
                # Idle since the last fold (most functions, most of the time): nothing to add.
                out.append(TaxedFunction(view, dict(running.by_category), running.dollars))
                continue
            grown = WorkloadSummary(0.0, view.processes, view.counters.growth_since(running.counters), {},
                                    calls_growth(view.decompression_by_library, running.decompression))
            tax = compute_tax(grown, self.costs, probe_mean_ns)
            added = 0.0
            for category in CATEGORIES:
                part = max(0.0, tax.by_category[category])
                running.by_category[category] += part
                added += part
            running.dollars += added * (view.memory_mb or self.default_memory_mb) / 1024 * self.price
            running.counters = Counters.of_raw(tuple(map(max, view.counters.raw, running.counters.raw)))
            running.decompression = {name: stats for name, stats in view.decompression_by_library.items()}
            out.append(TaxedFunction(view, dict(running.by_category), running.dollars))
        return out
