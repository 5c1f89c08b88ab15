"""Frozen dataclasses passed between layers (probes -> attribution -> report)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Mapping

NS_PER_SECOND = 1_000_000_000


@dataclass(frozen=True)
class Counters:
    """Kernel-side activity of one process or one workload, in base units."""

    syscalls: int = 0
    syscall_ns: int = 0
    syscall_offcpu_ns: int = 0
    voluntary_switches: int = 0
    involuntary_switches: int = 0
    oncpu_ns: int = 0
    runqueue_ns: int = 0
    faults_user: int = 0
    faults_kernel: int = 0
    faults_minor: int = 0
    faults_major: int = 0
    hardirq_ns: int = 0
    softirq_ns: int = 0

    def __add__(self, other: Counters) -> Counters:
        return Counters(**{
            f.name: getattr(self, f.name) + getattr(other, f.name)
            for f in dataclasses.fields(self)
        })


@dataclass(frozen=True)
class CallStats:
    """Count and total time of one kind of call (a syscall, a decompressor)."""

    count: int = 0
    ns: int = 0
    cpu_ns: int = 0  # of ns, the part on CPU (decompressors; 0 where not measured)

    def __add__(self, other: CallStats) -> CallStats:
        return CallStats(self.count + other.count, self.ns + other.ns, self.cpu_ns + other.cpu_ns)


def merge_calls(
    a: Mapping[str, CallStats], b: Mapping[str, CallStats]
) -> dict[str, CallStats]:
    """Sum two name -> CallStats tables."""
    merged = dict(a)
    for name, stats in b.items():
        merged[name] = merged.get(name, CallStats()) + stats
    return merged


@dataclass(frozen=True)
class ProcessSample:
    """What the probes saw of one process (tgid) during a capture."""

    pid: int
    comm: str
    workload: int
    exited: bool
    counters: Counters
    syscalls_by_name: Mapping[str, CallStats] = field(default_factory=dict)
    decompression_by_library: Mapping[str, CallStats] = field(default_factory=dict)


@dataclass(frozen=True)
class KernelSnapshot:
    """One consistent read of every probe map."""

    processes: tuple[ProcessSample, ...]
    map_update_failures: Mapping[str, int]
    taken_at_ns: int
    # Mean run time of each probe program (kernel BPF statistics), if enabled.
    probe_mean_ns: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class HostInfo:
    kernel: str
    cpus: int
    headers: str  # "matching" | "fallback"
    cpu_model: str = ""


@dataclass(frozen=True)
class WorkloadSummary:
    """A workload's whole process tree summed, with its wall time."""

    wall_seconds: float
    processes: int
    counters: Counters
    syscalls_by_name: Mapping[str, CallStats]
    decompression_by_library: Mapping[str, CallStats]


@dataclass(frozen=True)
class Capture:
    """One `fntax profile` run: what ran, where, and what the kernel did."""

    command: tuple[str, ...]
    pid: int
    exit_code: int | None
    host: HostInfo
    workload: WorkloadSummary
    per_process: tuple[ProcessSample, ...]
    map_update_failures: Mapping[str, int]
    probe_mean_ns: Mapping[str, float] = field(default_factory=dict)
    # Time the run's cgroup spent throttled at its CPU quota (--cpu-share).
    throttled_ns: int = 0
    stop_signal: int | None = None  # SIGINT/SIGTERM that ended the capture early

    @property
    def interrupted(self) -> bool:
        return self.stop_signal is not None
