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

from profiler.model import NS_PER_SECOND, Counters, WorkloadSummary

CATEGORIES: tuple[str, ...] = (
    "syscalls", "page_faults", "context_switches", "runqueue_wait",
    "interrupts", "decompression", "virtualization",
)
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
    that probe the workload caused in its own context."""
    def mean(name: str) -> float:
        return probe_mean_ns.get(name, 0.0)

    switches = counters.voluntary_switches + counters.involuntary_switches
    total_ns = (
        counters.syscalls * (mean("sys_enter") + mean("sys_exit"))
        + switches * mean("sched_switch")
        + counters.faults_user * mean("page_fault_user")
        + counters.faults_kernel * mean("page_fault_kernel")
        + counters.faults_minor * mean("fntax_fault_minor")
        + counters.faults_major * mean("fntax_fault_major")
    )
    # Inside a syscall's measured span: kernel-mode faults and their perf
    # samples, and the switch-out of a task blocking in the syscall.
    kernel_share = counters.faults_kernel / max(1, counters.faults_user + counters.faults_kernel)
    in_syscalls_ns = (
        counters.faults_kernel * mean("page_fault_kernel")
        + counters.faults_minor * kernel_share * mean("fntax_fault_minor")
        + counters.voluntary_switches * mean("sched_switch")
    )
    return total_ns / NS_PER_SECOND, in_syscalls_ns / NS_PER_SECOND


def compute_tax(workload: WorkloadSummary, costs: HostCosts,
                probe_mean_ns: Mapping[str, float] | None = None,
                virtualization_seconds: float = 0.0, throttled_seconds: float = 0.0) -> Tax:
    c = workload.counters
    runqueue = c.runqueue_ns / NS_PER_SECOND
    share_wait = min(runqueue, max(0.0, throttled_seconds))
    observer, observer_in_syscalls = observer_seconds(c, probe_mean_ns or {})
    oncpu = c.oncpu_ns / NS_PER_SECOND
    switches = c.voluntary_switches + c.involuntary_switches
    syscall_cpu = max(0, c.syscall_ns - c.syscall_offcpu_ns) / NS_PER_SECOND
    by_category = {
        "syscalls": max(0.0, syscall_cpu - c.voluntary_switches * costs.context_switch - observer_in_syscalls),
        "page_faults": c.faults_user * costs.page_fault_minor,
        "context_switches": switches * costs.context_switch,
        "runqueue_wait": runqueue - share_wait,
        "interrupts": (c.hardirq_ns + c.softirq_ns) / NS_PER_SECOND,
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
    syscall_work = max(0.0, tax.by_category["syscalls"] - c.syscalls * costs.syscall)
    blocked = max(0.0, (c.syscall_offcpu_ns - c.runqueue_ns) / NS_PER_SECOND)
    seconds = tax.own_work_seconds + syscall_work + c.syscalls * costs.function_call + blocked
    return BaremetalBaseline(seconds=seconds, syscall_work_seconds=syscall_work, blocked_seconds=blocked)
