"""Names of the KVM slots of probes/kvm.bpf.c (the proc_kvm map's `slot`).

The slot layout is read from probes/fntax.h (FNTAX_KVM_* defines); the names
are the label values: lower-case VMX basic exit reasons (SVM codes are folded
onto them in the probe, so one vocabulary covers both), KVM_EXIT_* for exits
that reach the VM monitor, and a small set of port buckets. Anything past the
known names is `other`: the label set is bounded.
"""

from __future__ import annotations

from profiler.bpf.contracts import Header, load_header

OTHER = "other"
ERROR = "error"
# enum fntax_kvm_port_bucket (probes/kvm.bpf.c), in order.
PORT_BUCKETS: tuple[str, ...] = ("other", "post", "serial", "pci_config", "fw_cfg", "legacy", "ata", "high")
_UEXIT_OTHER = 46
_UEXIT_ERROR = 47

# VMX basic exit reasons (arch/x86/include/uapi/asm/vmx.h; the same names the
# kvm_exit tracepoint prints). SVM exit codes are folded onto these in the
# probe (fntax_kvm_svm_slot), so one vocabulary covers both.
VMX_EXIT_REASONS: dict[int, str] = {
    0: "exception_nmi", 1: "external_interrupt", 2: "triple_fault", 3: "init_signal", 4: "sipi_signal",
    7: "interrupt_window", 8: "nmi_window", 9: "task_switch", 10: "cpuid", 12: "hlt", 13: "invd",
    14: "invlpg", 15: "rdpmc", 16: "rdtsc", 18: "vmcall", 19: "vmclear", 20: "vmlaunch", 21: "vmptrld",
    22: "vmptrst", 23: "vmread", 24: "vmresume", 25: "vmwrite", 26: "vmoff", 27: "vmon",
    28: "cr_access", 29: "dr_access", 30: "io_instruction", 31: "msr_read", 32: "msr_write",
    33: "invalid_state", 34: "msr_load_fail", 36: "mwait_instruction", 37: "monitor_trap_flag",
    39: "monitor_instruction", 40: "pause_instruction", 41: "mce_during_vmentry",
    43: "tpr_below_threshold", 44: "apic_access", 45: "eoi_induced", 46: "gdtr_idtr", 47: "ldtr_tr",
    48: "ept_violation", 49: "ept_misconfig", 50: "invept", 51: "rdtscp", 52: "preemption_timer",
    53: "invvpid", 54: "wbinvd", 55: "xsetbv", 56: "apic_write", 57: "rdrand", 58: "invpcid",
    59: "vmfunc", 60: "encls", 61: "rdseed", 62: "pml_full", 63: "xsaves", 64: "xrstors",
    67: "umwait", 68: "tpause", 74: "bus_lock", 75: "notify", 77: "tdcall", 84: "msr_read_imm",
    85: "msr_write_imm",
}

# KVM_EXIT_* (include/uapi/linux/kvm.h).
USERSPACE_EXIT_REASONS: dict[int, str] = {
    0: "unknown", 1: "exception", 2: "io", 3: "hypercall", 4: "debug", 5: "hlt", 6: "mmio",
    7: "irq_window_open", 8: "shutdown", 9: "fail_entry", 10: "intr", 11: "set_tpr", 12: "tpr_access",
    13: "s390_sieic", 14: "s390_reset", 15: "dcr", 16: "nmi", 17: "internal_error", 18: "osi",
    19: "papr_hcall", 20: "s390_ucontrol", 21: "watchdog", 22: "s390_tsch", 23: "epr",
    24: "system_event", 25: "s390_stsi", 26: "ioapic_eoi", 27: "hyperv", 28: "arm_nisv",
    29: "x86_rdmsr", 30: "x86_wrmsr", 31: "dirty_ring_full", 32: "ap_reset_hold", 33: "x86_bus_lock",
    34: "xen", 35: "riscv_sbi", 36: "riscv_csr", 37: "notify", 38: "loongarch_iocsr",
    39: "memory_fault", 40: "tdx",
}


def exit_reason_name(slot: int) -> str:
    return VMX_EXIT_REASONS.get(slot, OTHER)


def userspace_exit_name(slot: int) -> str:
    if slot == _UEXIT_ERROR:
        return ERROR
    return USERSPACE_EXIT_REASONS.get(slot, OTHER)


def port_bucket_name(slot: int) -> str:
    return PORT_BUCKETS[slot] if 0 <= slot < len(PORT_BUCKETS) else OTHER


def split_slot(slot: int, header: Header | None = None) -> tuple[int, str]:
    """(table index in profiler.figures.KVM_TABLES, label value) of a proc_kvm slot."""
    h = header or load_header()
    uexit_base, port_base = h.define("FNTAX_KVM_UEXIT_BASE"), h.define("FNTAX_KVM_PORT_BASE")
    if slot < uexit_base:
        return 0, exit_reason_name(slot)
    if slot < port_base:
        return 1, userspace_exit_name(slot - uexit_base)
    return 2, port_bucket_name(slot - port_base)
