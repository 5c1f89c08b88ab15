"""Every figure fntax reports, declared once.

Like ebpf_exporter's map declarations, this table is data, not code: each row
names a counter of `struct fntax_counters` (probes/fntax.h, the one source of
the layout), its unit, where it goes in a capture's JSON, the Prometheus
family and label value it becomes, and the tax category it feeds. The
snapshot reader, the model, the ledger, capture JSON (writer and reader), the
exposition, the report and the comparison all walk this table; none of them
spells a counter's name. The loader checks at load that the table and the
compiled struct agree member by member (profiler/bpf/contracts.py).

To add a counter: add the member to `struct fntax_counters`, make a probe
count it, add one row here. Everything else follows.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

# Label names (Prometheus): one place for all of them.
LABEL_FUNCTION = "function"
LABEL_KIND = "kind"
LABEL_CATEGORY = "category"
LABEL_SYSCALL = "syscall"
LABEL_LIBRARY = "library"
LABEL_TYPE = "type"
LABEL_MODE = "mode"
LABEL_PROBE = "probe"
LABEL_MAP = "map"
LABEL_REASON = "reason"
LABEL_PORT = "port"

NS_PER_SECOND = 1_000_000_000


class Unit(enum.Enum):
    COUNT = "count"
    NANOSECONDS = "ns"  # kept in ns, reported in seconds (base unit)


# Declarations are singletons: compared by identity (fast in the agent's hot
# loops), never field by field.
@dataclass(frozen=True, eq=False)
class Family:
    """A Prometheus metric family; `label` tells its figures apart, if several."""

    name: str
    help: str
    label: str | None = None


@dataclass(frozen=True, eq=False)
class Figure:
    """One counter from the probes to every place it is shown."""

    field: str  # member of struct fntax_counters
    unit: Unit
    json: tuple[str, ...]  # path inside a capture's counter block
    family: Family | None  # None: in captures only (keeps the agent's series per function bounded)
    label_value: str | None  # the family label's value for this figure
    category: str | None  # the tax category it feeds (None: it is the base, not tax)
    text: str  # how a table shows it: "{}" stands for the value
    # Probe programs (their labels) that run once per unit of this figure, in
    # the workload's own context: the observer's cost is derived from these.
    probes: tuple[str, ...] = ()

    def value(self, raw: int) -> int | float:
        """The figure in its base unit (seconds for times)."""
        return raw / NS_PER_SECOND if self.unit is Unit.NANOSECONDS else raw


# Tax categories, in report order (profiler/tax/compute.py says how each is made).
CATEGORIES: tuple[str, ...] = (
    "syscalls", "page_faults", "context_switches", "runqueue_wait",
    "interrupts", "decompression", "virtualization",
)

_SYSCALLS = Family("fntax_syscalls_total", "Syscalls made by the function's processes.")
_SYSCALL_SECONDS = Family("fntax_syscall_seconds_total", "Time inside syscalls, entry to exit.")
_SWITCHES = Family("fntax_context_switches_total", "Context switches, voluntary or involuntary.", LABEL_TYPE)
_ONCPU = Family("fntax_oncpu_seconds_total", "Time on a CPU.")
_RUNQUEUE = Family("fntax_runqueue_wait_seconds_total", "Time runnable but waiting for a CPU.")
# The agent has no timeline: the idle-CPU part of the run-queue wait is its
# lower bound of the wait for the CPU share (quota) the function bought.
_CPU_SHARE_WAIT = Family("fntax_cpu_share_wait_seconds_total",
                         "Run-queue wait while the task's CPU sat idle: waiting for the function's CPU share "
                         "(cgroup quota), a lower bound.")
_FAULT_EXCEPTIONS = Family("fntax_page_fault_exceptions_total",
                           "Page-fault exceptions by the mode they hit in (user, kernel).", LABEL_MODE)
_FAULTS = Family("fntax_page_faults_total", "Page faults by type (minor, major).", LABEL_TYPE)
_IRQ = Family("fntax_irq_seconds_total", "Interrupt time charged to the function (hard, soft).", LABEL_TYPE)
# KVM (VM-monitor processes; probes/kvm.bpf.c).
_KVM_EXIT_SECONDS = Family("fntax_kvm_exit_seconds_total",
                           "Time from a VM exit to re-entering the guest (kvm_exit to kvm_entry), halts excluded.")
_KVM_USERSPACE_SECONDS = Family("fntax_kvm_userspace_exit_seconds_total",
                                "Time from a VM exit that reached the VM monitor to the vCPU thread's re-entry, "
                                "halts excluded.")
_VCPU_WAIT = Family("fntax_vcpu_wait_seconds_total",
                    "Run-queue wait of vCPU threads: runnable, not running (steal time for the guest).")

# In the order of struct fntax_counters (checked at load).
FIGURES: tuple[Figure, ...] = (
    Figure("syscalls", Unit.COUNT, ("syscalls", "count"), _SYSCALLS, None, "syscalls", "{}",
           ("sys_enter", "sys_exit")),
    Figure("syscall_ns", Unit.NANOSECONDS, ("syscalls", "seconds"), _SYSCALL_SECONDS, None, "syscalls",
           "in {}"),
    Figure("syscall_offcpu_ns", Unit.NANOSECONDS, ("syscalls", "blocked_seconds"), None, None,
           None, "({} blocked)"),
    Figure("voluntary_switches", Unit.COUNT, ("context_switches", "voluntary"), _SWITCHES, "voluntary",
           "context_switches", "{} voluntary,", ("sched:sched_switch",)),
    Figure("involuntary_switches", Unit.COUNT, ("context_switches", "involuntary"), _SWITCHES, "involuntary",
           "context_switches", "{} involuntary", ("sched:sched_switch",)),
    Figure("oncpu_ns", Unit.NANOSECONDS, ("oncpu_seconds",), _ONCPU, None, None, "{}"),
    Figure("runqueue_ns", Unit.NANOSECONDS, ("runqueue_wait_seconds",), _RUNQUEUE, None, "runqueue_wait",
           "{}"),
    # The part of the wait while the CPU the task was queued on sat idle: it
    # waited for its cgroup's quota (or the CPU to wake), not for a CPU.
    Figure("runqueue_idle_ns", Unit.NANOSECONDS, ("runqueue_wait_idle_cpu_seconds",), _CPU_SHARE_WAIT, None, None,
           "{} (while its CPU was idle)"),
    Figure("faults_user", Unit.COUNT, ("page_faults", "user"), _FAULT_EXCEPTIONS, "user", "page_faults",
           "{} user-mode,", ("page_fault_user",)),
    Figure("faults_kernel", Unit.COUNT, ("page_faults", "kernel"), _FAULT_EXCEPTIONS, "kernel", None,
           "{} kernel-mode,", ("page_fault_kernel",)),
    Figure("faults_minor", Unit.COUNT, ("page_faults", "minor"), _FAULTS, "minor", None, "{} minor,",
           ("fault_minor",)),
    Figure("faults_major", Unit.COUNT, ("page_faults", "major"), _FAULTS, "major", None, "{} major,",
           ("fault_major",)),
    # User-mode faults taken inside a decoder call: their time is decompression.
    Figure("faults_in_decoder", Unit.COUNT, ("decompression", "page_faults"), None, None, None,
           "{} page faults inside decoders"),
    Figure("hardirq_ns", Unit.NANOSECONDS, ("irq_seconds", "hard"), _IRQ, "hard", "interrupts", "{} hard,"),
    Figure("softirq_ns", Unit.NANOSECONDS, ("irq_seconds", "soft"), _IRQ, "soft", "interrupts", "{} soft"),
)

# KVM figures (the KVM section of struct fntax_counters, after the above).
# Exit time and userspace-exit time feed `virtualization` (profiler/tax/
# virtualization.py says how, and which one where both exist); halts are an
# idle guest and the guest's time inside KVM_RUN is its own work: never tax.
KVM_FIGURES: tuple[Figure, ...] = (
    Figure("kvm_exits", Unit.COUNT, ("kvm", "exits"), None, None, None, "{} exits",
           ("kvm:kvm_exit", "kvm:kvm_entry")),
    Figure("kvm_exit_ns", Unit.NANOSECONDS, ("kvm", "exit_seconds"), _KVM_EXIT_SECONDS, None, "virtualization",
           "in {}"),
    # The KVM_RUN ioctl that follows each one is seen by the raw sys_enter /
    # sys_exit programs, already charged once per syscall (the syscalls row).
    Figure("kvm_userspace_exits", Unit.COUNT, ("kvm", "userspace_exits"), None, None, None,
           "{} reached the VM monitor", ("kvm:kvm_userspace_exit",)),
    Figure("kvm_userspace_ns", Unit.NANOSECONDS, ("kvm", "userspace_exit_seconds"), _KVM_USERSPACE_SECONDS, None,
           "virtualization", "in {}"),
    Figure("kvm_reentries_by_entry", Unit.COUNT, ("kvm", "reentries", "by_entry"), None, None, None,
           "(re-entry seen: {} at kvm_entry,"),
    Figure("kvm_reentries_by_run", Unit.COUNT, ("kvm", "reentries", "by_run"), None, None, None,
           "{} at the next KVM_RUN)"),
    Figure("kvm_guest_ns", Unit.NANOSECONDS, ("kvm", "guest_seconds"), None, None, None, "guest on CPU {}"),
    Figure("kvm_pio_in", Unit.COUNT, ("kvm", "pio", "in"), None, None, None, "port I/O {} in,", ("kvm:kvm_pio",)),
    Figure("kvm_pio_out", Unit.COUNT, ("kvm", "pio", "out"), None, None, None, "{} out;", ("kvm:kvm_pio",)),
    Figure("kvm_mmio_read", Unit.COUNT, ("kvm", "mmio", "read"), None, None, None, "MMIO {} reads,",
           ("kvm:kvm_mmio",)),
    Figure("kvm_mmio_write", Unit.COUNT, ("kvm", "mmio", "write"), None, None, None, "{} writes;",
           ("kvm:kvm_mmio",)),
    Figure("kvm_halts", Unit.COUNT, ("kvm", "halts"), None, None, None, "halts {}", ("kvm:kvm_vcpu_wakeup",)),
    Figure("kvm_halt_ns", Unit.NANOSECONDS, ("kvm", "halt_seconds"), None, None, None, "({} idle);"),
    Figure("vcpu_wait_ns", Unit.NANOSECONDS, ("kvm", "vcpu_wait_seconds"), _VCPU_WAIT, None, None,
           "vCPU wait {}"),
)
BASE_FIGURES = FIGURES
FIGURES = BASE_FIGURES + KVM_FIGURES

# Handles for the code that does arithmetic on particular figures (the tax
# model): bound by position, so the counter names stay in the table above.
(SYSCALLS, SYSCALL_TIME, SYSCALL_BLOCKED, VOLUNTARY_SWITCHES, INVOLUNTARY_SWITCHES, ONCPU, RUNQUEUE_WAIT,
 RUNQUEUE_IDLE_CPU, FAULTS_USER, FAULTS_KERNEL, FAULTS_MINOR, FAULTS_MAJOR, FAULTS_IN_DECODER, HARDIRQ,
 SOFTIRQ) = BASE_FIGURES
(KVM_EXITS, KVM_EXIT_TIME, KVM_USERSPACE_EXITS, KVM_USERSPACE_TIME, KVM_REENTRIES_BY_ENTRY, KVM_REENTRIES_BY_RUN,
 KVM_GUEST_TIME, KVM_PIO_IN, KVM_PIO_OUT, KVM_MMIO_READ, KVM_MMIO_WRITE, KVM_HALTS, KVM_HALT_TIME,
 VCPU_WAIT) = KVM_FIGURES

BY_FIELD: dict[str, Figure] = {f.field: f for f in FIGURES}

# Table rows: figures that share the first step of their JSON path share a
# row, shown in `table_order` (their texts joined by spaces).
ROW_TITLES: dict[str, str] = {
    "oncpu_seconds": "on-CPU time", "syscalls": "syscalls", "context_switches": "context switches",
    "runqueue_wait_seconds": "run-queue wait", "runqueue_wait_idle_cpu_seconds": "  of which",
    "page_faults": "page faults", "irq_seconds": "interrupts", "decompression": "decompression",
    "kvm": "KVM",
}


@dataclass(frozen=True, eq=False)
class CallTable:
    """Per-name figures (count and time of each syscall, each decoder library)."""

    json: tuple[str, ...]  # where the name -> {count, seconds[, cpu_seconds]} table goes
    family: Family | None  # labelled by `label`; None: in captures only
    label: str
    exported: str  # "count" or "seconds": what the family exports per name
    cpu_seconds: bool = False  # the table also carries on-CPU seconds


SYSCALLS_BY_NAME = CallTable(("syscalls", "by_name"),
                             Family("fntax_syscalls_by_name_total",
                                    "Syscalls by name: each function's top K, then other."),
                             LABEL_SYSCALL, "count")
DECOMPRESSION_BY_LIBRARY = CallTable(("decompression", "by_library"),
                                     Family("fntax_decompression_seconds_total", "Time inside decompressors."),
                                     LABEL_LIBRARY, "seconds", cpu_seconds=True)

# KVM per-name tables (per process of a VM monitor; slot names in
# profiler/bpf/kvm_names.py): reasons are a fixed known set plus `other`.
KVM_EXITS_BY_REASON = CallTable(("kvm", "exits_by_reason"),
                                Family("fntax_kvm_exits_total", "VM exits by reason (kvm_exit)."),
                                LABEL_REASON, "count")
KVM_USERSPACE_EXITS_BY_REASON = CallTable(("kvm", "userspace_exits_by_reason"),
                                          Family("fntax_kvm_userspace_exits_total",
                                                 "VM exits that reached the VM monitor, by reason "
                                                 "(kvm_userspace_exit)."),
                                          LABEL_REASON, "count")
KVM_PIO_BY_PORT = CallTable(("kvm", "pio_by_port"), None, LABEL_PORT, "count")
KVM_TABLES: tuple[CallTable, ...] = (KVM_EXITS_BY_REASON, KVM_USERSPACE_EXITS_BY_REASON, KVM_PIO_BY_PORT)

# Families derived by the tax layer from the figures above.
TAX_SECONDS = Family("fntax_tax_seconds_total", "Instruction tax by category (see the README's tax model).",
                     LABEL_CATEGORY)
TAX_DOLLARS = Family("fntax_tax_dollars_total", "Tax seconds x memory GB x price per GB-second.")
PROCESSES_STARTED = Family("fntax_processes_started_total", "Processes started (forked or found) per function.")
INVOCATIONS = Family("fntax_invocations_total",
                     "Invocations per function, where its rule says how they show (rules key 'invocations').")
