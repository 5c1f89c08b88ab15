"""The instruction tax: a workload's time split into its own work and the OS.

Model (documented in the README, "The tax model"). Two views of one run:

**CPU view** (summed over every task of the workload). On-CPU time + run-queue
wait splits exactly into the function's own work, the observer (fntax's own
probes), the tax categories and the CPU-share wait:

* ``syscalls``: CPU time inside syscalls (enter to exit, less the time
  switched out in them), less the direct cost of the voluntary switches made
  inside them (counted under ``context_switches``) and less probe time that
  ran inside them. Measured.
* ``page_faults``: user-mode faults outside decoder calls x the calibrated
  minor-fault service time. Estimated: without kprobes there is no fault-exit
  hook to time. Kernel-mode faults happen inside syscalls and are already in
  ``syscalls``; faults inside a decoder are already in ``decompression``.
* ``context_switches``: switches x the calibrated direct switch cost. Estimated.
* ``runqueue_wait``: wake-up or preemption to running again, while the CPU the
  task waited on ran something else (competition for a CPU). Measured. Under
  a CPU quota, the wait while that CPU sat idle is the quota holding the task
  back: the share the function bought, not OS overhead, split off as
  ``cpu_share_wait``. Without a quota that idle-CPU wait is the CPU waking up,
  and stays run-queue tax.
* ``interrupts``: hardirq + softirq time charged to the task. Measured.
* ``decompression``: on-CPU time inside decompressor entry points. Measured.
* ``virtualization``: VM exits of a VM monitor, exit to re-entry, halts
  excluded; where kvm_exit is silent (nested/PVM hosts), the exits that reach
  the VM monitor only, and said to be partial (profiler/tax/virtualization.py).
  The guest's own time inside KVM_RUN is its work, not syscall time.

**Wall view** (what is billed). The workload's timeline splits its wall time
exactly into busy (a task on a CPU), waiting (none on a CPU, some runnable)
and blocked (every task asleep, waiting on the world). Busy time takes the
CPU view's shares of on-CPU time; waiting splits into competition (run-queue
tax) and the quota in the measured proportion of the tasks' waits. So the
wall-time tax is at most the wall time, however many tasks ran at once.

The observer's time is the kernel's BPF run-time statistics (mean run time of
each probe) times the events the workload itself caused; it is reported as
``observer_seconds`` and removed from the on-CPU time it inflated.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass, field
from typing import Mapping

from profiler.figures import (
    CATEGORIES,
    FAULTS_IN_DECODER,
    FAULTS_KERNEL,
    FAULTS_MINOR,
    FAULTS_USER,
    FIGURES,
    ONCPU,
    RUNQUEUE_IDLE_CPU,
    RUNQUEUE_WAIT,
    SYSCALL_BLOCKED,
    SYSCALL_TIME,
    SYSCALLS,
    VOLUNTARY_SWITCHES,
    Figure,
    Unit,
)
from profiler.figures import KVM_GUEST_TIME
from profiler.model import NS_PER_SECOND, Counters, Timeline, WorkloadSummary
from profiler.tax.virtualization import virtualization_seconds as kvm_virtualization_seconds

__all__ = ["CATEGORIES", "HostCosts", "Tax", "WallTax", "BaremetalBaseline", "compute_tax", "wall_tax",
           "baremetal", "observer_seconds"]

# Categories that are on-CPU time (run-queue wait is not).
ONCPU_CATEGORIES = ("syscalls", "page_faults", "context_switches", "interrupts", "decompression",
                    "virtualization")
# Which calibration figure each estimated category rests on.
ESTIMATE_SOURCES = {"page_faults": "page_fault_minor", "context_switches": "context_switch"}


@dataclass(frozen=True)
class HostCosts:
    """Calibrated seconds per event on this host (see profiler.tax.calibrate)."""

    page_fault_minor: float
    context_switch: float
    syscall: float
    function_call: float
    # Calibration figures whose spread stayed too wide to trust.
    unsteady: tuple[str, ...] = ()


@dataclass(frozen=True)
class Tax:
    """The CPU view: seconds summed over every task of the workload."""

    own_work_seconds: float
    observer_seconds: float
    by_category: Mapping[str, float]
    estimated: tuple[str, ...]
    oncpu_seconds: float
    runqueue_seconds: float
    cpu_share_wait_seconds: float = 0.0
    # < 1 when the estimates exceeded the measured CPU time and were scaled
    # down to fit (said in the capture and the table, never silently).
    estimate_scale: float = 1.0
    # Estimated categories resting on a calibration figure with a wide spread.
    unsteady: tuple[str, ...] = ()

    @property
    def seconds(self) -> float:
        return sum(self.by_category.values())

    @property
    def oncpu_tax_seconds(self) -> float:
        return sum(self.by_category[name] for name in ONCPU_CATEGORIES)

    @property
    def cpu_ratio(self) -> float:
        """The tax's share of the CPU time the function used."""
        return self.oncpu_tax_seconds / self.oncpu_seconds if self.oncpu_seconds > 0 else 0.0


@dataclass(frozen=True)
class WallTax:
    """The wall view: the billed wall time split into parts that add up to it."""

    wall_seconds: float
    busy_seconds: float
    waiting_cpu_seconds: float  # none on a CPU, some waiting for one
    waiting_share_seconds: float  # none on a CPU, held back by the quota
    blocked_seconds: float  # every task asleep: waiting on the world
    own_work_seconds: float
    observer_seconds: float
    by_category: Mapping[str, float] = field(default_factory=dict)
    measured: bool = True  # False: no timeline (a --pid capture), parts scaled from the CPU view

    @property
    def seconds(self) -> float:
        return sum(self.by_category.values())


@dataclass(frozen=True)
class BaremetalBaseline:
    """The same work with no OS in the way (single address space, ring 0, no scheduler)."""

    seconds: float  # at the CPU share the function bought (a whole CPU without a quota)
    whole_cpu_seconds: float  # with the quota lifted
    work_seconds: float  # CPU-seconds of work that stays (own work, syscall work, calls)
    syscall_work_seconds: float
    blocked_seconds: float  # waiting on the world, which stays
    parallelism: float  # tasks that ran at once, on average, while busy


# The probes' cost per unit of each figure, for the last probe means seen: the
# agent taxes every function that changed at every scrape with the same means.
_LAST_COSTS: tuple[dict[str, float], tuple[float, ...]] = ({}, tuple(0.0 for _ in FIGURES))
_AT = {figure.field: index for index, figure in enumerate(FIGURES)}


def _cost_per_figure(probe_mean_ns: Mapping[str, float]) -> tuple[float, ...]:
    global _LAST_COSTS
    means, costs = _LAST_COSTS
    if probe_mean_ns == means:
        return costs
    costs = tuple(sum(probe_mean_ns.get(probe, 0.0) for probe in figure.probes) for figure in FIGURES)
    _LAST_COSTS = (dict(probe_mean_ns), costs)
    return costs


def observer_seconds(counters: Counters, probe_mean_ns: Mapping[str, float]) -> tuple[float, float]:
    """(observer time in the workload's context, the part of it inside syscalls).

    Each probe's mean run time (kernel BPF statistics) times the events of
    that probe the workload caused in its own context (the figure table says
    which probes run per unit of each figure)."""
    cost = _cost_per_figure(probe_mean_ns)
    total_ns = sum(map(operator.mul, counters.raw, cost))
    # Inside a syscall's measured span: kernel-mode faults and their perf
    # samples, and the switch-out of a task blocking in the syscall.
    kernel_share = counters[FAULTS_KERNEL] / max(1, counters[FAULTS_USER] + counters[FAULTS_KERNEL])
    in_syscalls_ns = (
        counters[FAULTS_KERNEL] * cost[_AT[FAULTS_KERNEL.field]]
        + counters[FAULTS_MINOR] * kernel_share * cost[_AT[FAULTS_MINOR.field]]
        + counters[VOLUNTARY_SWITCHES] * cost[_AT[VOLUNTARY_SWITCHES.field]]
    )
    return total_ns / NS_PER_SECOND, in_syscalls_ns / NS_PER_SECOND


def _figures_of(category: str, unit: Unit) -> tuple[Figure, ...]:
    return tuple(f for f in FIGURES if f.category == category and f.unit is unit)


# Which figures feed each category straight, worked out once (compute_tax runs
# for every function that changed, at every scrape of the agent).
_SECONDS_OF = {c: _figures_of(c, Unit.NANOSECONDS) for c in {f.category for f in FIGURES if f.category}}
_COUNTS_OF = {c: _figures_of(c, Unit.COUNT) for c in _SECONDS_OF}


def _category_seconds(counters: Counters, category: str) -> float:
    """The sum of the measured times that feed a category straight (interrupts)."""
    return sum(float(counters.value(f)) for f in _SECONDS_OF.get(category, ()))


def _category_count(counters: Counters, category: str) -> int:
    return sum(counters[f] for f in _COUNTS_OF.get(category, ()))


def compute_tax(workload: WorkloadSummary, costs: HostCosts,
                probe_mean_ns: Mapping[str, float] | None = None,
                virtualization_seconds: float | None = None, quota: bool = False,
                throttled_seconds: float = 0.0) -> Tax:
    """The CPU view of a workload's tax.

    `quota`: it ran under a CPU quota; `throttled_seconds`: its cgroup's
    throttled time (cpu.stat, summed over the group's per-CPU run queues).
    Each is a lower bound of the time its tasks waited on the quota: the
    idle-CPU wait misses throttled time while the CPU ran other work, the
    cgroup's figure counts a run queue once however many of the workload's
    tasks waited in it. The CPU-share wait is the larger, never more than
    the measured wait; what remains is competition for a CPU."""
    c = workload.counters
    runqueue = float(c.value(RUNQUEUE_WAIT))
    share_wait = min(runqueue, max(float(c.value(RUNQUEUE_IDLE_CPU)), throttled_seconds)) if quota else 0.0
    observer, observer_in_syscalls = observer_seconds(c, probe_mean_ns or {})
    oncpu = float(c.value(ONCPU))
    switches = _category_count(c, "context_switches")
    # A VM monitor's KVM_RUN ioctls are the guest running, not syscall work (KVM section).
    syscall_cpu = max(0, c[SYSCALL_TIME] - c[SYSCALL_BLOCKED] - c[KVM_GUEST_TIME]) / NS_PER_SECOND
    faults_outside_decoders = max(0, _category_count(c, "page_faults") - c[FAULTS_IN_DECODER])
    by_category = {
        "syscalls": max(0.0, syscall_cpu - c[VOLUNTARY_SWITCHES] * costs.context_switch - observer_in_syscalls),
        "page_faults": faults_outside_decoders * costs.page_fault_minor,
        "context_switches": switches * costs.context_switch,
        "runqueue_wait": runqueue - share_wait,
        "interrupts": _category_seconds(c, "interrupts"),
        "decompression": sum(s.cpu_ns for s in workload.decompression_by_library.values()) / NS_PER_SECOND,
        "virtualization": (kvm_virtualization_seconds(c) if virtualization_seconds is None
                           else virtualization_seconds),
    }
    own_work = oncpu - observer - sum(by_category[name] for name in ONCPU_CATEGORIES)
    scale = 1.0
    if own_work < 0:
        # The estimates exceed the measured CPU time (tiny workloads, or a
        # calibration that does not fit this run): scale them down so the
        # parts still add up, and say so (Tax.estimate_scale).
        estimated_total = by_category["page_faults"] + by_category["context_switches"]
        excess = min(-own_work, estimated_total)
        if estimated_total > 0:
            scale = 1 - excess / estimated_total
            for name in ESTIMATE_SOURCES:
                by_category[name] = max(0.0, by_category[name] * scale)
        own_work += excess
    if own_work < 0:
        # Still more than the CPU time: the syscall spans (enter to exit, as
        # the probes time them) hold part of the syscall probes' own run time,
        # which the observer figure (the kernel's BPF statistics) counts in
        # full. A syscall-heavy workload under heavier probes (the agent's)
        # shows it. The probes' time is the observer's, never the function's
        # tax: the syscall figure gives up the overlap.
        overlap = min(-own_work, by_category["syscalls"])
        by_category["syscalls"] -= overlap
        own_work += overlap
    if own_work < 0:
        # Still more: the observer figure is an estimate too (each probe's
        # mean run time, measured at load, times its runs). The probes ran
        # inside this CPU time, so they took at most what is left of it: a
        # mean measured high on this machine (a loop of cheap syscalls under
        # the agent's probes, seen on CI) must not push the parts past it.
        cut = min(-own_work, observer)
        observer -= cut
        own_work += cut
    own_work = max(0.0, own_work)
    unsteady = tuple(name for name, source in ESTIMATE_SOURCES.items() if source in costs.unsteady)
    return Tax(own_work_seconds=own_work, observer_seconds=observer, by_category=by_category,
               estimated=tuple(ESTIMATE_SOURCES), oncpu_seconds=oncpu, runqueue_seconds=runqueue,
               cpu_share_wait_seconds=share_wait, estimate_scale=scale, unsteady=unsteady)


def wall_tax(tax: Tax, timeline: Timeline | None, wall_seconds: float) -> WallTax:
    """The wall view: the timeline's parts, busy time shared out as the CPU view shares on-CPU time."""
    if timeline is not None and timeline.wall_ns > 0:
        wall = timeline.wall_ns / NS_PER_SECOND
        busy = timeline.busy_ns / NS_PER_SECOND
        waiting = timeline.waiting_ns / NS_PER_SECOND
        blocked = timeline.blocked_ns / NS_PER_SECOND
        measured = True
    else:
        # No timeline (a --pid capture): the CPU view squeezed into the wall time.
        wall = wall_seconds
        scale = min(1.0, wall / (tax.oncpu_seconds + tax.runqueue_seconds)) \
            if tax.oncpu_seconds + tax.runqueue_seconds > 0 else 0.0
        busy, waiting = tax.oncpu_seconds * scale, tax.runqueue_seconds * scale
        blocked = max(0.0, wall - busy - waiting)
        measured = False
    share_fraction = tax.cpu_share_wait_seconds / tax.runqueue_seconds if tax.runqueue_seconds > 0 else 0.0
    waiting_share = waiting * share_fraction
    per_oncpu = busy / tax.oncpu_seconds if tax.oncpu_seconds > 0 else 0.0
    by_category = {name: tax.by_category[name] * per_oncpu for name in ONCPU_CATEGORIES}
    by_category["runqueue_wait"] = waiting - waiting_share
    own = tax.own_work_seconds * per_oncpu if tax.oncpu_seconds > 0 else busy
    return WallTax(wall_seconds=wall, busy_seconds=busy, waiting_cpu_seconds=waiting - waiting_share,
                   waiting_share_seconds=waiting_share, blocked_seconds=blocked, own_work_seconds=own,
                   observer_seconds=tax.observer_seconds * per_oncpu,
                   by_category={name: by_category[name] for name in CATEGORIES}, measured=measured)


def baremetal(workload: WorkloadSummary, tax: Tax, wall: WallTax, costs: HostCosts,
              cpu_share: float | None = None) -> BaremetalBaseline:
    """Duration of the same work on a single-address-space, ring-0 system with no scheduler.

    Syscalls become function calls but keep the work they do (their CPU time
    less the calibrated entry/exit cost of each); there is no run-queue wait,
    context switch, page fault after start, decompression (images are loaded
    as they run), VM exit or observer. The work runs on as many cores at once
    as it did here (its measured parallelism while busy), at the CPU share
    the function bought (and, named apart, at whole CPUs); time the whole
    workload spent blocked on the world stays. Time a process spent waiting
    for another process of the same workload is not blocked time: some task
    of the workload was busy then."""
    c = workload.counters
    syscall_work = max(0.0, tax.by_category["syscalls"] - c[SYSCALLS] * costs.syscall)
    work = tax.own_work_seconds + syscall_work + c[SYSCALLS] * costs.function_call
    parallelism = max(1.0, tax.oncpu_seconds / wall.busy_seconds) if wall.busy_seconds > 0 else 1.0
    whole = work / parallelism + wall.blocked_seconds
    at_share = work / min(parallelism, cpu_share) + wall.blocked_seconds if cpu_share else whole
    return BaremetalBaseline(seconds=at_share, whole_cpu_seconds=whole, work_seconds=work,
                             syscall_work_seconds=syscall_work, blocked_seconds=wall.blocked_seconds,
                             parallelism=parallelism)
