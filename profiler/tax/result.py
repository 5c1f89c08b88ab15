"""What `fntax profile` produces: one typed result, written as capture JSON.

The same type comes back from a capture file (profiler.output.capture_json
reads it), so the report, the comparison and the plots never walk
dictionaries by string keys.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

from profiler.model import HostInfo, ProcessSample, WorkloadSummary
from profiler.tax.cost import Cost


@dataclass(frozen=True)
class TaxSummary:
    """The tax of the mean invocation."""

    seconds: float
    ratio: float  # of the billed duration
    own_work_seconds: float
    observer_seconds: float
    cpu_share_wait_seconds: float
    by_category: Mapping[str, float]
    estimated: tuple[str, ...] = ()


@dataclass(frozen=True)
class BaselineSummary:
    name: str
    kind: str
    seconds: float
    speedup: float | None  # measured duration / baseline duration
    difference_by_category: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class RunRow:
    """One run of a --repeat series."""

    run: int
    warmup: bool
    pid: int
    exit_code: int | None
    duration_seconds: float
    oncpu_seconds: float
    tax_seconds: float
    observer_seconds: float
    cpu_share_wait_seconds: float
    by_category: Mapping[str, float]
    baremetal_seconds: float


@dataclass(frozen=True)
class ProfileResult:
    """A capture, and (when analysed) its tax, baseline, cost and runs."""

    command: tuple[str, ...]
    pid: int
    exit_code: int | None
    interrupted: bool
    host: HostInfo
    workload: WorkloadSummary  # the sum over every measured invocation
    per_process: tuple[ProcessSample, ...]
    map_update_failures: Mapping[str, int]
    invocations: int = 1
    warmup: int = 0
    tax: TaxSummary | None = None
    baseline: BaselineSummary | None = None
    cost: Cost | None = None
    prices: str | None = None
    runs: tuple[RunRow, ...] = ()
    percentiles: Mapping[str, Mapping[str, float]] = field(default_factory=dict)
    cpu_share: float | None = None

    @property
    def duration_seconds(self) -> float:
        """The mean invocation's duration."""
        mean = self.percentiles.get("duration_seconds", {}).get("mean")
        return float(mean) if mean is not None else self.workload.wall_seconds / max(1, self.invocations)

    def per_invocation(self, total: float) -> float:
        """A workload total as a per-invocation figure."""
        return total / max(1, self.invocations)
