"""The instruction tax: a workload's time split into its own work and the OS.

Model (documented in the README, "The tax model"):

* on-CPU time + run-queue wait is the time the function occupied or wanted a
  CPU. It splits exactly into the function's own work, the observer (fntax's
  own probes) and the tax categories below; own work is what is left.
* ``syscalls``: CPU time inside syscalls (enter to exit, less the time
  switched out in them), less the direct cost of the voluntary switches made
  inside them (counted under ``context_switches``) and less probe time that
  ran inside them. Measured.
* ``page_faults``: user-mode faults x the calibrated minor-fault service time.
  Estimated: without kprobes the kernel offers no fault-exit hook to time.
  Kernel-mode faults happen inside syscalls and are already in ``syscalls``.
* ``context_switches``: switches x the calibrated direct switch cost. Estimated.
* ``runqueue_wait``: wake-up or preemption to running again. Measured. Time
  spent throttled at a cgroup CPU quota (--cpu-share) is not OS overhead but
  the CPU share the function bought: it is split off as ``cpu_share_wait``.
* ``interrupts``: hardirq + softirq time charged to the task. Measured.
* ``decompression``: on-CPU time inside decompressor entry points. Measured.
* ``virtualization``: VM exits (0 until fntax follows microVMs).

The observer's time is the kernel's BPF run-time statistics (mean run time of
each probe) times the events the workload itself caused; it is reported as
``observer_seconds`` and removed from the on-CPU time it inflated.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

from profiler.figures import (
    CATEGORIES,
    FAULTS_KERNEL,
    FAULTS_MINOR,
    FAULTS_USER,
    FIGURES,
    ONCPU,
    RUNQUEUE_WAIT,
    SYSCALL_BLOCKED,
    SYSCALL_TIME,
    SYSCALLS,
    VOLUNTARY_SWITCHES,
    Figure,
    Unit,
)
from profiler.model import NS_PER_SECOND, Counters, WorkloadSummary

__all__ = ["CATEGORIES", "HostCosts", "Tax", "BaremetalBaseline", "compute_tax", "baremetal", "observer_seconds"]

# Categories that are on-CPU time (run-queue wait is not).
_ONCPU_CATEGORIES = ("syscalls", "page_faults", "context_switches", "interrupts",
                     "decompression", "virtualization")


@dataclass(frozen=True)
class HostCosts:
    """Calibrated seconds per event on this host (see profiler.tax.calibrate)."""

    page_fault_minor: float
    context_switch: float
    syscall: float
    function_call: float


@dataclass(frozen=True)
class Tax:
    own_work_seconds: float
    observer_seconds: float
    by_category: Mapping[str, float]
    estimated: tuple[str, ...]
    oncpu_seconds: float
    runqueue_seconds: float
    cpu_share_wait_seconds: float = 0.0

    @property
    def seconds(self) -> float:
        return sum(self.by_category.values())


@dataclass(frozen=True)
class BaremetalBaseline:
    """The same work with no OS in the way (single address space, ring 0, one task)."""

    seconds: float
    syscall_work_seconds: float
    blocked_seconds: float


def observer_seconds(counters: Counters, probe_mean_ns: Mapping[str, float]) -> tuple[float, float]:
    """(observer time in the workload's context, the part of it inside syscalls).

    Each probe's mean run time (kernel BPF statistics) times the events of
    that probe the workload caused in its own context (the figure table says
    which probes run per unit of each figure)."""
    def cost_per(figure: Figure) -> float:
        return sum(probe_mean_ns.get(probe, 0.0) for probe in figure.probes)

    total_ns = sum(counters[f] * cost_per(f) for f in FIGURES)
    # Inside a syscall's measured span: kernel-mode faults and their perf
    # samples, and the switch-out of a task blocking in the syscall.
    kernel_share = counters[FAULTS_KERNEL] / max(1, counters[FAULTS_USER] + counters[FAULTS_KERNEL])
    in_syscalls_ns = (
        counters[FAULTS_KERNEL] * cost_per(FAULTS_KERNEL)
        + counters[FAULTS_MINOR] * kernel_share * cost_per(FAULTS_MINOR)
        + counters[VOLUNTARY_SWITCHES] * cost_per(VOLUNTARY_SWITCHES)
    )
    return total_ns / NS_PER_SECOND, in_syscalls_ns / NS_PER_SECOND


def _category_seconds(counters: Counters, category: str) -> float:
    """The sum of the measured times that feed a category straight (interrupts)."""
    return sum(float(counters.value(f)) for f in FIGURES if f.category == category and f.unit is Unit.NANOSECONDS)


def _category_count(counters: Counters, category: str) -> int:
    return sum(counters[f] for f in FIGURES if f.category == category and f.unit is Unit.COUNT)


def compute_tax(workload: WorkloadSummary, costs: HostCosts,
                probe_mean_ns: Mapping[str, float] | None = None,
                virtualization_seconds: float = 0.0, throttled_seconds: float = 0.0) -> Tax:
    c = workload.counters
    runqueue = float(c.value(RUNQUEUE_WAIT))
    share_wait = min(runqueue, max(0.0, throttled_seconds))
    observer, observer_in_syscalls = observer_seconds(c, probe_mean_ns or {})
    oncpu = float(c.value(ONCPU))
    switches = _category_count(c, "context_switches")
    syscall_cpu = max(0, c[SYSCALL_TIME] - c[SYSCALL_BLOCKED]) / NS_PER_SECOND
    by_category = {
        "syscalls": max(0.0, syscall_cpu - c[VOLUNTARY_SWITCHES] * costs.context_switch - observer_in_syscalls),
        "page_faults": _category_count(c, "page_faults") * costs.page_fault_minor,
        "context_switches": switches * costs.context_switch,
        "runqueue_wait": runqueue - share_wait,
        "interrupts": _category_seconds(c, "interrupts"),
        "decompression": sum(s.cpu_ns for s in workload.decompression_by_library.values()) / NS_PER_SECOND,
        "virtualization": virtualization_seconds,
    }
    oncpu_tax = sum(by_category[name] for name in _ONCPU_CATEGORIES)
    own_work = oncpu - observer - oncpu_tax
    if own_work < 0:
        # Estimates overshot the measured CPU time (tiny workloads): scale the
        # estimated categories down so the parts still add up to the whole.
        estimated_total = by_category["page_faults"] + by_category["context_switches"]
        excess = min(-own_work, estimated_total)
        if estimated_total > 0:
            for name in ("page_faults", "context_switches"):
                by_category[name] = max(0.0, by_category[name] * (1 - excess / estimated_total))
        own_work = max(0.0, own_work + excess)
    return Tax(own_work_seconds=own_work, observer_seconds=observer, by_category=by_category,
               estimated=("page_faults", "context_switches"), oncpu_seconds=oncpu,
               runqueue_seconds=runqueue, cpu_share_wait_seconds=share_wait)


def baremetal(workload: WorkloadSummary, tax: Tax, costs: HostCosts) -> BaremetalBaseline:
    """Duration of the same work on a single-address-space, ring-0, one-task system.

    Syscalls become function calls but keep the work they do (their CPU time
    less the calibrated entry/exit cost of each); time blocked waiting on
    devices or peers stays; there is no run-queue wait, no context switch, no
    page fault after start, no decompression (images are loaded as they run),
    no VM exit, no observer."""
    c = workload.counters
    syscall_work = max(0.0, tax.by_category["syscalls"] - c[SYSCALLS] * costs.syscall)
    blocked = max(0.0, (c[SYSCALL_BLOCKED] - c[RUNQUEUE_WAIT]) / NS_PER_SECOND)
    seconds = tax.own_work_seconds + syscall_work + c[SYSCALLS] * costs.function_call + blocked
    return BaremetalBaseline(seconds=seconds, syscall_work_seconds=syscall_work, blocked_seconds=blocked)
