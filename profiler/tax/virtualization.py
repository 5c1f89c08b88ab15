"""The virtualization tax of a VM monitor, and what this host lets fntax see of it.

Where the kernel emits `kvm:kvm_exit`/`kvm:kvm_entry` (VMX, SVM), every VM exit
is timed from exit to re-entry, the way `perf kvm stat` pairs them: that
time (halts excluded: an idle guest is not overhead) is the virtualization
tax, and exits that reach the VM monitor are inside it (their userspace time
is not added again). Where those two stay silent (nested or PVM hosts, like
the test machines), only exits that reach the VM monitor are seen
(`kvm:kvm_userspace_exit`, timed to the vCPU thread's next KVM_RUN): the
category is then filled from them and said to be *partial*: exits the
kernel handled without the VM monitor are missing.

The guest's own time inside KVM_RUN (figures.KVM_GUEST_TIME) is its work, not a
syscall: the tax model takes it out of the syscall category.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Mapping

from profiler.figures import (
    KVM_EXIT_TIME,
    KVM_EXITS,
    KVM_GUEST_TIME,
    KVM_HALTS,
    KVM_MMIO_READ,
    KVM_MMIO_WRITE,
    KVM_PIO_IN,
    KVM_PIO_OUT,
    KVM_REENTRIES_BY_ENTRY,
    KVM_REENTRIES_BY_RUN,
    KVM_USERSPACE_EXITS,
    KVM_USERSPACE_TIME,
    NS_PER_SECOND,
)
from profiler.model import Counters


class Visibility(enum.Enum):
    MEASURED = "measured"
    PARTIAL = "partial"
    UNAVAILABLE = "unavailable"
    NOT_SEEN = "not_seen"  # no VM activity to judge by


# The KVM figure groups a host may or may not let fntax measure (capture JSON
# `kvm.measurable`, doctor's table, the agent's fntax_kvm_figure_state).
KVM_GROUPS: tuple[str, ...] = ("exits", "exit_seconds", "userspace_exits", "userspace_exit_seconds", "pio",
                               "mmio", "halts", "vcpu_wait", "virtualization")


def has_kvm_activity(c: Counters) -> bool:
    return any(c[f] for f in (KVM_EXITS, KVM_USERSPACE_EXITS, KVM_PIO_IN, KVM_PIO_OUT, KVM_GUEST_TIME,
                              KVM_MMIO_READ, KVM_MMIO_WRITE, KVM_HALTS))


def exits_visible(c: Counters) -> bool:
    """kvm_exit fires for these processes (false on nested/PVM hosts)."""
    return c[KVM_EXITS] > 0


def virtualization_seconds(c: Counters) -> float:
    """The virtualization category: exit time where kvm_exit fires, else userspace-exit time."""
    if exits_visible(c):
        return c[KVM_EXIT_TIME] / NS_PER_SECOND
    return c[KVM_USERSPACE_TIME] / NS_PER_SECOND


def guest_seconds(c: Counters) -> float:
    """On-CPU time inside KVM_RUN (the guest's own work, and in-kernel exit handling)."""
    return c[KVM_GUEST_TIME] / NS_PER_SECOND


@dataclass(frozen=True)
class KvmVisibility:
    """Per KVM figure group: measured, partial, unavailable or not seen."""

    states: Mapping[str, Visibility]

    @property
    def partial(self) -> bool:
        return self.states.get("virtualization") is Visibility.PARTIAL

    def missing(self) -> list[str]:
        return [g for g, s in self.states.items() if s in (Visibility.UNAVAILABLE, Visibility.PARTIAL)]

    def as_json(self) -> dict[str, str]:
        return {group: state.value for group, state in self.states.items()}


def visibility(c: Counters, halts_expected: bool = False) -> KvmVisibility:
    """What these counters (a VM's, or a doctor trial's) show this host can measure."""
    if not has_kvm_activity(c):
        return KvmVisibility({g: Visibility.NOT_SEEN for g in KVM_GROUPS})
    M, P, U, N = Visibility.MEASURED, Visibility.PARTIAL, Visibility.UNAVAILABLE, Visibility.NOT_SEEN
    exits = M if exits_visible(c) else U
    userspace = M if c[KVM_USERSPACE_EXITS] else N
    # Re-entry is seen at kvm_entry (as perf kvm stat) or, where that is
    # silent, at the vCPU thread's next KVM_RUN: either way the VM monitor's
    # handling is inside; the second leaves out the kernel's entry path only.
    timed = c[KVM_REENTRIES_BY_RUN] + c[KVM_REENTRIES_BY_ENTRY] > 0
    userspace_time = M if timed else N
    if exits is M:
        virt = M
    elif c[KVM_USERSPACE_EXITS]:
        virt = P
    else:
        virt = U
    return KvmVisibility({
        "exits": exits, "exit_seconds": exits, "userspace_exits": userspace,
        "userspace_exit_seconds": userspace_time, "pio": M if c[KVM_PIO_IN] + c[KVM_PIO_OUT] else N,
        "mmio": M if c[KVM_MMIO_READ] + c[KVM_MMIO_WRITE] else N,
        "halts": M if c[KVM_HALTS] else (U if halts_expected else N), "vcpu_wait": M,
        "virtualization": virt,
    })
