"""Frozen dataclasses passed between layers (probes -> attribution -> report)."""

from __future__ import annotations

import operator

from dataclasses import dataclass, field
from typing import Iterable, Iterator, Mapping, NamedTuple, Sequence

from profiler.figures import BY_FIELD, FIGURES, NS_PER_SECOND, Figure

__all__ = ["NS_PER_SECOND", "Counters", "CallStats", "KvmCalls", "ProcessSample", "KernelSnapshot", "HostInfo",
           "WorkloadSummary", "Capture", "merge_calls", "summarise"]


# A figure's place in Counters (a dict: the agent reads counters millions of times).
_POSITION: dict[str, int] = {figure.field: index for index, figure in enumerate(FIGURES)}


class Counters:
    """Kernel-side activity of one process or one workload: one value per
    figure of `profiler.figures.FIGURES`, in its order, in raw units.

    Read with `counters[figure]` (raw) or `counters.value(figure)` (base
    unit). Built from the probes' struct by the snapshot reader, or by field
    name: `Counters(syscalls=3)`."""

    __slots__ = ("_values",)

    def __init__(self, values: Iterable[int] | None = None, **by_field: int) -> None:
        raw = list(values) if values is not None else [0] * len(FIGURES)
        if len(raw) != len(FIGURES):
            raise ValueError(f"expected {len(FIGURES)} counter values, got {len(raw)}")
        for name, value in by_field.items():
            if name not in BY_FIELD:
                raise TypeError(f"no counter named {name!r}")
            raw[_POSITION[name]] = value
        self._values: tuple[int, ...] = tuple(raw)

    @classmethod
    def of_raw(cls, values: tuple[int, ...]) -> Counters:
        """From a tuple already in figure order and length (the snapshot reader's hot path)."""
        made = cls.__new__(cls)
        made._values = values
        return made

    def __getitem__(self, figure: Figure) -> int:
        return self._values[_POSITION[figure.field]]

    def value(self, figure: Figure) -> int | float:
        return figure.value(self[figure])

    def items(self) -> Iterator[tuple[Figure, int]]:
        return zip(FIGURES, self._values)

    @property
    def raw(self) -> tuple[int, ...]:
        return self._values

    def __add__(self, other: Counters) -> Counters:
        return Counters.of_raw(tuple(map(operator.add, self._values, other._values)))

    def __sub__(self, other: Counters) -> Counters:
        return Counters.of_raw(tuple(map(operator.sub, self._values, other._values)))

    def growth_since(self, earlier: Counters) -> Counters:
        """What grew since `earlier`; a counter that went down counts as 0."""
        return Counters.of_raw(tuple(a - b if a > b else 0 for a, b in zip(self._values, earlier._values)))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Counters) and self._values == other._values

    def __hash__(self) -> int:
        return hash(self._values)

    def __repr__(self) -> str:
        shown = ", ".join(f"{f.field}={v}" for f, v in self.items() if v)
        return f"Counters({shown})"


class CallStats(NamedTuple):
    """Count and total time of one kind of call (a syscall, a decompressor).

    Immutable like the dataclasses here, but a tuple: the agent makes one
    per process and call name at every fold, and a frozen dataclass costs
    three times as much to build."""

    count: int = 0  # type: ignore[assignment]  # the field, not tuple.count (never called on these)
    ns: int = 0
    cpu_ns: int = 0  # of ns, the part on CPU (decompressors; 0 where not measured)

    def __add__(self, other: CallStats) -> CallStats:  # type: ignore[override]  # a sum, not concatenation
        return CallStats(self.count + other.count, self.ns + other.ns, self.cpu_ns + other.cpu_ns)


def calls_growth(now: Mapping[str, CallStats], earlier: Mapping[str, CallStats]) -> dict[str, CallStats]:
    """What grew per name since `earlier` (a figure that went down counts as 0)."""
    out = {}
    for name, stats in now.items():
        old = earlier.get(name, CallStats())
        out[name] = CallStats(max(0, stats.count - old.count), max(0, stats.ns - old.ns),
                              max(0, stats.cpu_ns - old.cpu_ns))
    return out


def merge_calls(
    a: Mapping[str, CallStats], b: Mapping[str, CallStats]
) -> dict[str, CallStats]:
    """Sum two name -> CallStats tables."""
    merged = dict(a)
    for name, stats in b.items():
        merged[name] = merged.get(name, CallStats()) + stats
    return merged


@dataclass(frozen=True)
class KvmCalls:
    """A VM monitor's per-name KVM tables (profiler.figures.KVM_TABLES):
    VM exits by reason, exits that reached the VM monitor by reason (count
    and time to re-entry), port I/O by port bucket."""

    exits_by_reason: Mapping[str, CallStats] = field(default_factory=dict)
    userspace_exits_by_reason: Mapping[str, CallStats] = field(default_factory=dict)
    pio_by_port: Mapping[str, CallStats] = field(default_factory=dict)

    def __add__(self, other: KvmCalls) -> KvmCalls:
        # Nearly every process has no KVM tables: no merging for them.
        if not other:
            return self
        if not self:
            return other
        return KvmCalls(merge_calls(self.exits_by_reason, other.exits_by_reason),
                        merge_calls(self.userspace_exits_by_reason, other.userspace_exits_by_reason),
                        merge_calls(self.pio_by_port, other.pio_by_port))

    def growth_since(self, earlier: KvmCalls) -> KvmCalls:
        if not earlier:
            return self
        return KvmCalls(calls_growth(self.exits_by_reason, earlier.exits_by_reason),
                        calls_growth(self.userspace_exits_by_reason, earlier.userspace_exits_by_reason),
                        calls_growth(self.pio_by_port, earlier.pio_by_port))

    def tables(self) -> tuple[Mapping[str, CallStats], ...]:
        """In the order of profiler.figures.KVM_TABLES."""
        return (self.exits_by_reason, self.userspace_exits_by_reason, self.pio_by_port)

    def __bool__(self) -> bool:
        return any(self.tables())


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
    kvm: KvmCalls = field(default_factory=KvmCalls)
    # Exited, and its pid already belongs to a new process (the agent's maps
    # keep the two apart until the old one's entries are read and deleted).
    superseded: bool = False


@dataclass(frozen=True)
class Timeline:
    """A workload's wall time from the kernel's own timestamps (`fntax profile`).

    From its exec to the moment its last task left the CPU, split exactly
    into: busy (at least one task on a CPU), waiting (none on a CPU, some
    runnable) and blocked (every live task asleep: waiting on the world)."""

    start_ns: int
    end_ns: int  # 0 while a task is still alive
    busy_ns: int
    waiting_ns: int
    blocked_ns: int
    lock_misses: int = 0

    @property
    def ended(self) -> bool:
        return self.end_ns > 0

    @property
    def wall_ns(self) -> int:
        return self.busy_ns + self.waiting_ns + self.blocked_ns


@dataclass(frozen=True)
class KernelSnapshot:
    """One consistent read of every probe map."""

    processes: tuple[ProcessSample, ...]
    map_update_failures: Mapping[str, int]
    taken_at_ns: int
    # Mean run time of each probe program (kernel BPF statistics), if enabled.
    probe_mean_ns: Mapping[str, float] = field(default_factory=dict)
    timelines: Mapping[int, Timeline] = field(default_factory=dict)  # by workload id
    # Runs of each probe the kernel skipped (recursion_misses: another
    # tracing program ran on that CPU), since the probes loaded.
    probe_misses: Mapping[str, int] = field(default_factory=dict)


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
    kvm: KvmCalls = field(default_factory=KvmCalls)


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
    # Time the run's cgroup spent throttled at its CPU quota (--cpu-share), as
    # its cpu.stat says (summed over the group's per-CPU run queues).
    throttled_ns: int = 0
    stop_signal: int | None = None  # SIGINT/SIGTERM that ended the capture early
    timeline: Timeline | None = None
    cpu_share: float | None = None  # the CPU quota it ran under, in CPUs
    probe_misses: Mapping[str, int] = field(default_factory=dict)  # during this run, by probe

    @property
    def interrupted(self) -> bool:
        return self.stop_signal is not None


def summarise(processes: Sequence[ProcessSample], wall_ns: int) -> WorkloadSummary:
    """A workload's processes summed, with its wall time."""
    counters = Counters()
    syscalls: dict[str, CallStats] = {}
    decomp: dict[str, CallStats] = {}
    kvm = KvmCalls()
    for proc in processes:
        counters = counters + proc.counters
        syscalls = merge_calls(syscalls, proc.syscalls_by_name)
        decomp = merge_calls(decomp, proc.decompression_by_library)
        kvm = kvm + proc.kvm
    return WorkloadSummary(wall_seconds=wall_ns / NS_PER_SECOND, processes=len(processes),
                           counters=counters, syscalls_by_name=syscalls,
                           decompression_by_library=decomp, kvm=kvm)
