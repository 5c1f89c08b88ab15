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
class WallSummary:
    """The mean invocation's wall time, in parts that add up to it."""

    wall_seconds: float
    busy_seconds: float
    waiting_cpu_seconds: float
    waiting_share_seconds: float
    blocked_seconds: float
    own_work_seconds: float
    observer_seconds: float
    measured: bool = True  # from the workload's timeline (False: --pid, scaled from the CPU view)
    lock_misses: int = 0


@dataclass(frozen=True)
class TaxSummary:
    """The tax of the mean invocation.

    `seconds`, `ratio` and `wall_by_category` are billed wall time (they add
    up within the wall time); `by_category`, `own_work_seconds`,
    `observer_seconds` and `cpu_share_wait_seconds` are CPU time summed over
    the workload's tasks (they add up to on-CPU time + run-queue wait)."""

    seconds: float
    ratio: float  # of the billed duration
    own_work_seconds: float
    observer_seconds: float
    cpu_share_wait_seconds: float
    by_category: Mapping[str, float]
    estimated: tuple[str, ...] = ()
    cpu_seconds: float | None = None
    cpu_ratio: float | None = None  # of the CPU time used
    wall_by_category: Mapping[str, float] = field(default_factory=dict)
    wall: WallSummary | None = None
    estimate_scale: float = 1.0
    unsteady: tuple[str, ...] = ()
    cgroup_throttled_seconds: float | None = None


@dataclass(frozen=True)
class BaselineSummary:
    name: str
    kind: str
    seconds: float
    speedup: float | None  # measured duration / baseline duration
    difference_by_category: Mapping[str, float] = field(default_factory=dict)
    # The built-in model: at a whole CPU (quota lifted) beside `seconds`, which
    # is at the CPU share the function bought; the parallelism it assumes.
    whole_cpu_seconds: float | None = None
    cpu_share: float | None = None
    parallelism: float | None = None
    blocked_seconds: float | None = None


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
    cpu_tax_seconds: float = 0.0
    wall_by_category: Mapping[str, float] = field(default_factory=dict)
    blocked_seconds: float = 0.0


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
    # Probe runs the kernel skipped during the measured runs (another tracing
    # program ran on that CPU then): a skipped wake-up loses a run-queue wait.
    probe_misses: Mapping[str, int] = field(default_factory=dict)

    @property
    def duration_seconds(self) -> float:
        """The mean invocation's duration."""
        mean = self.percentiles.get("duration_seconds", {}).get("mean")
        return float(mean) if mean is not None else self.workload.wall_seconds / max(1, self.invocations)

    def per_invocation(self, total: float) -> float:
        """A workload total as a per-invocation figure."""
        return total / max(1, self.invocations)
