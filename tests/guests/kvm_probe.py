"""Standalone loader for probes/kvm.bpf.c: attach, boot guests, print per-tgid figures.

    .venv/bin/python -m tests.guests.kvm_probe --writes 5000 --kind microvm --vms 2

(as root, from the repository root). It is groundwork: the ctypes mirrors and
the reason/bucket names here are what the integrators move next to
probes/fntax.h's mirrors (profiler/probe_contract.py) when kvm.bpf.c joins the
one module. Nothing here imports profiler.
"""

from __future__ import annotations

import argparse
import ctypes
import re
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

ROOT = Path(__file__).resolve().parents[2]
KVM_PROBE = ROOT / "probes" / "kvm.bpf.c"

EXIT_SLOTS = 96
EXIT_OTHER = EXIT_SLOTS - 1
UEXIT_SLOTS = 48
UEXIT_OTHER = 46
UEXIT_ERROR = 47
PORT_BUCKETS = ("other", "post", "serial", "pci_config", "fw_cfg", "legacy", "ata", "high")
ERROR_NAMES = {0: "kvm_threads", 1: "kvm_procs", 2: "lost_delta"}

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
    return VMX_EXIT_REASONS.get(slot, "other")


def userspace_exit_name(slot: int) -> str:
    if slot == UEXIT_ERROR:
        return "error"
    return USERSPACE_EXIT_REASONS.get(slot, "other")


# ctypes mirrors of the structs in probes/kvm.bpf.c (checked against the
# loaded maps by check_declarations).
COUNTER_FIELDS = (
    "exits", "exit_ns", "halt_exits", "halt_exit_ns", "userspace_exits", "userspace_ns",
    "userspace_halt_ns", "reentries_by_entry", "reentries_by_run", "kvm_runs", "pio_in", "pio_out",
)
TAIL_FIELDS = ("mmio_read", "mmio_write", "mmio_unsatisfied", "halts", "halt_wait_ns", "halt_poll_ns")


class KvmCounters(ctypes.Structure):
    _fields_ = ([(name, ctypes.c_uint64) for name in COUNTER_FIELDS]
                + [("pio_ports", ctypes.c_uint64 * len(PORT_BUCKETS))]
                + [(name, ctypes.c_uint64) for name in TAIL_FIELDS])


class KvmReason(ctypes.Structure):
    _fields_ = [("count", ctypes.c_uint64), ("ns", ctypes.c_uint64)]


class KvmProc(ctypes.Structure):
    _fields_ = [("c", KvmCounters), ("exit_reasons", KvmReason * EXIT_SLOTS),
                ("userspace_reasons", KvmReason * UEXIT_SLOTS), ("exited", ctypes.c_uint32),
                ("pad", ctypes.c_uint32), ("comm", ctypes.c_char * 16)]


class KvmThread(ctypes.Structure):
    _fields_ = [("exit_since_ns", ctypes.c_uint64), ("ue_since_ns", ctypes.c_uint64),
                ("exit_slot", ctypes.c_uint32), ("ue_slot", ctypes.c_uint32),
                ("entry_seen", ctypes.c_uint32), ("pad", ctypes.c_uint32)]


class KvmCpu(ctypes.Structure):
    _fields_ = [("tid", ctypes.c_uint32), ("vcpu", ctypes.c_uint32), ("events", ctypes.c_uint32),
                ("pad", ctypes.c_uint32), ("f", KvmThread), ("exit_dirty", ctypes.c_uint64 * 2),
                ("ue_dirty", ctypes.c_uint64), ("delta", KvmCounters),
                ("exit_reasons", KvmReason * EXIT_SLOTS), ("userspace_reasons", KvmReason * UEXIT_SLOTS)]


TYPE_SIZES = {"u32": 4, "u64": 8, "fntax_kvm_proc": ctypes.sizeof(KvmProc),
              "fntax_kvm_thread": ctypes.sizeof(KvmThread), "fntax_kvm_cpu": ctypes.sizeof(KvmCpu)}
MAP_KINDS = {"hash": 1, "array": 2, "percpu_array": 6}
_DECL = re.compile(r"fntax:map\s+(\w+)\s+(\w+)\s+(\w+)\s+(\w+)")


def declarations(path: Path = KVM_PROBE) -> list[tuple[str, str, str, str]]:
    """The `fntax:map NAME KIND KEY VALUE` lines of the probe's leading comment."""
    return [m.groups() for m in _DECL.finditer(path.read_text())]  # type: ignore[misc]


@dataclass(frozen=True)
class Reason:
    count: int
    seconds: float


@dataclass(frozen=True)
class KvmFigures:
    """One VM-monitor process's KVM figures, in base units."""

    tgid: int
    comm: str
    exited: bool
    exits: int
    exit_seconds: float
    halt_exits: int
    halt_exit_seconds: float
    userspace_exits: int
    userspace_seconds: float
    userspace_halt_seconds: float
    reentries_by_entry: int
    reentries_by_run: int
    kvm_runs: int
    pio_in: int
    pio_out: int
    pio_ports: dict[str, int]
    mmio_read: int
    mmio_write: int
    mmio_unsatisfied: int
    halts: int
    halt_wait_seconds: float
    halt_poll_seconds: float
    exit_reasons: dict[str, Reason] = field(default_factory=dict)
    userspace_reasons: dict[str, Reason] = field(default_factory=dict)

    @property
    def pio(self) -> int:
        return self.pio_in + self.pio_out

    @property
    def mmio(self) -> int:
        """MMIO accesses (an unsatisfied read completes as a read: not counted twice)."""
        return self.mmio_read + self.mmio_write


def _reasons(array: Any, slots: int, name: Any) -> dict[str, Reason]:
    out: dict[str, tuple[int, int]] = {}
    for slot in range(slots):
        count, ns = int(array[slot].count), int(array[slot].ns)
        if count or ns:
            label = name(slot)
            prev = out.get(label, (0, 0))
            out[label] = (prev[0] + count, prev[1] + ns)
    return {label: Reason(c, ns / 1e9) for label, (c, ns) in out.items()}


def figures_from(tgid: int, proc: KvmProc) -> KvmFigures:
    c = proc.c
    return KvmFigures(
        tgid=tgid, comm=proc.comm.decode(errors="replace"), exited=bool(proc.exited),
        exits=c.exits, exit_seconds=c.exit_ns / 1e9, halt_exits=c.halt_exits,
        halt_exit_seconds=c.halt_exit_ns / 1e9, userspace_exits=c.userspace_exits,
        userspace_seconds=c.userspace_ns / 1e9, userspace_halt_seconds=c.userspace_halt_ns / 1e9,
        reentries_by_entry=c.reentries_by_entry, reentries_by_run=c.reentries_by_run,
        kvm_runs=c.kvm_runs, pio_in=c.pio_in, pio_out=c.pio_out,
        pio_ports={name: int(c.pio_ports[i]) for i, name in enumerate(PORT_BUCKETS) if c.pio_ports[i]},
        mmio_read=c.mmio_read, mmio_write=c.mmio_write, mmio_unsatisfied=c.mmio_unsatisfied,
        halts=c.halts, halt_wait_seconds=c.halt_wait_ns / 1e9, halt_poll_seconds=c.halt_poll_ns / 1e9,
        exit_reasons=_reasons(proc.exit_reasons, EXIT_SLOTS, exit_reason_name),
        userspace_reasons=_reasons(proc.userspace_reasons, UEXIT_SLOTS, userspace_exit_name),
    )


class KvmProbe:
    """probes/kvm.bpf.c loaded and attached (its TRACEPOINT_PROBEs attach at load)."""

    def __init__(self, src: Path = KVM_PROBE, cflags: tuple[str, ...] = ()) -> None:
        from bcc import BPF  # noqa: PLC0415 - bcc only where a probe is loaded

        self.bpf = BPF(src_file=str(src), cflags=list(cflags))
        self.check_declarations(src)

    def check_declarations(self, src: Path = KVM_PROBE) -> None:
        """The declared maps exist with the declared kind and key/value sizes."""
        for name, kind, key, value in declarations(src):
            table = self.bpf[name]
            where = f"{src.name}: map {name}"
            if int(table.ttype) != MAP_KINDS[kind]:
                raise RuntimeError(f"{where}: declared {kind}, loaded map type {table.ttype}")
            if ctypes.sizeof(table.Key) != TYPE_SIZES[key]:
                raise RuntimeError(f"{where}: key is {ctypes.sizeof(table.Key)} bytes, declared {key}")
            # Per-CPU tables expose one value per CPU as Leaf; sLeaf is one CPU's.
            leaf = getattr(table, "sLeaf", table.Leaf)
            if ctypes.sizeof(leaf) != TYPE_SIZES[value]:
                raise RuntimeError(f"{where}: value is {ctypes.sizeof(leaf)} bytes, "
                                   f"declared {value} ({TYPE_SIZES[value]})")

    def detach(self) -> None:
        """Detach every tracepoint (the maps and programs stay loaded)."""
        names = [tp.decode() if isinstance(tp, bytes) else str(tp) for tp in self.bpf.tracepoint_fds]
        self._attached = {tp: tp.replace(":", "__") for tp in names}
        for tp in self._attached:
            self.bpf.detach_tracepoint(tp=tp)

    def attach(self) -> None:
        """Re-attach what detach() took off."""
        for tp, suffix in getattr(self, "_attached", {}).items():
            self.bpf.attach_tracepoint(tp=tp, fn_name="tracepoint__" + suffix)
        self._attached = {}

    def snapshot(self) -> dict[int, KvmFigures]:
        out = {}
        for key, leaf in self.bpf["kvm_procs"].items():
            proc = ctypes.cast(ctypes.pointer(leaf), ctypes.POINTER(KvmProc)).contents
            out[int(key.value)] = figures_from(int(key.value), proc)
        return out

    def errors(self) -> dict[str, int]:
        table = self.bpf["kvm_errors"]
        return {name: int(table[ctypes.c_int(i)].value) for i, name in ERROR_NAMES.items()}

    def close(self) -> None:
        self.bpf.cleanup()

    def __enter__(self) -> KvmProbe:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def format_figures(fig: KvmFigures, wall_seconds: float | None = None) -> Iterator[str]:
    yield f"tgid {fig.tgid} ({fig.comm}){' exited' if fig.exited else ''}"
    if wall_seconds is not None:
        yield f"  VM wall time           {wall_seconds:.4f} s"
    yield f"  kvm_exit exits         {fig.exits} ({fig.exit_seconds:.6f} s exit->entry, "\
          f"halts {fig.halt_exits} / {fig.halt_exit_seconds:.6f} s)"
    yield f"  userspace exits        {fig.userspace_exits} ({fig.userspace_seconds:.6f} s to re-entry; "\
          f"closed by kvm_entry {fig.reentries_by_entry}, by KVM_RUN {fig.reentries_by_run})"
    for name, reason in sorted(fig.userspace_reasons.items(), key=lambda kv: -kv[1].count):
        yield f"    {name:<20} {reason.count:>9}  {reason.seconds:.6f} s"
    for name, reason in sorted(fig.exit_reasons.items(), key=lambda kv: -kv[1].count):
        yield f"    exit {name:<15} {reason.count:>9}  {reason.seconds:.6f} s"
    yield f"  KVM_RUN ioctls         {fig.kvm_runs}"
    yield f"  pio                    in {fig.pio_in}, out {fig.pio_out}  {fig.pio_ports}"
    yield f"  mmio                   read {fig.mmio_read}, write {fig.mmio_write} "\
          f"(unsatisfied reads {fig.mmio_unsatisfied})"
    yield f"  halts                  {fig.halts} (waited {fig.halt_wait_seconds:.6f} s, "\
          f"polled {fig.halt_poll_seconds:.6f} s)"


def main(argv: list[str] | None = None) -> int:
    from .build import build_boot_sector, build_pvh_elf  # noqa: PLC0415
    from .run import run_vm, start_vm, why_no_vm  # noqa: PLC0415, F401

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--writes", type=int, default=1000)
    parser.add_argument("--port", type=lambda s: int(s, 0), default=0x80)
    parser.add_argument("--kind", choices=("bios", "microvm"), default="microvm")
    parser.add_argument("--vms", type=int, default=1, help="VMs at once, the i-th making writes*(i+1)")
    parser.add_argument("--halt-ticks", type=int, default=0, help="bios guests: BIOS ticks (55 ms) halted first")
    args = parser.parse_args(argv)
    reason = why_no_vm()
    if reason:
        print(f"cannot run a VM: {reason}", file=sys.stderr)
        return 69
    with tempfile.TemporaryDirectory() as tmp, KvmProbe() as probe:
        procs = []
        for i in range(args.vms):
            image = Path(tmp) / f"guest{i}.img"
            writes = args.writes * (i + 1)
            if args.kind == "bios":
                spec = build_boot_sector(image, writes, args.port, halt_ticks=args.halt_ticks)
            else:
                spec = build_pvh_elf(image, writes, args.port)
            procs.append((spec, time.monotonic(), start_vm(image, f"kvmprobe-{i}", args.kind)))
        walls = {}
        for spec, started, proc in procs:
            proc.wait(120)
            walls[proc.pid] = time.monotonic() - started
            status = "ok" if proc.returncode == spec.exit_status else f"UNEXPECTED {proc.returncode}"
            print(f"VM pid {proc.pid}: {spec.writes} writes to {spec.port:#x}, exit status "
                  f"{proc.returncode} ({status})")
        snap = probe.snapshot()
        for _, _, proc in procs:
            fig = snap.get(proc.pid)
            if fig is None:
                print(f"tgid {proc.pid}: no KVM figures")
                continue
            for line in format_figures(fig, walls[proc.pid]):
                print(line)
        print(f"map errors: {probe.errors()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
