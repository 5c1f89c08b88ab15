"""What differs between the architectures fntax runs on: syscall numbers and
which pt_regs register holds a syscall argument the probes read.

The probes get these only through -D flags (`probe_cflags`), so the C never
spells a number; user space calls bpf(2) and perf_event_open(2) by number
because glibc has no wrapper for either. x86_64 and arm64 are known; any other
machine is refused here, before a probe is built, with the reason stated.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from profiler.errors import EnvironmentProblem


@dataclass(frozen=True)
class Arch:
    name: str  # the FNTAX_ARCH_<NAME> macro the probes branch on for register names
    nr_bpf: int
    nr_perf_event_open: int
    nr_execve: int
    nr_execveat: int
    nr_ioctl: int  # the KVM family finds KVM_RUN ioctls by it at raw sys_enter / sys_exit


# From each architecture's syscall table (arch/x86/entry/syscalls/syscall_64.tbl;
# arm64 uses include/uapi/asm-generic/unistd.h). The envp registers live in
# probes/syscalls.bpf.c's FNTAX_ARCH_* branches, the ioctl request register
# (KVM_RUN) in probes/kvm.bpf.c's: x86_64 passes syscall arguments in di, si,
# dx, r10, r8, r9; arm64 in regs[0..5].
X86_64 = Arch(name="X86_64", nr_bpf=321, nr_perf_event_open=298, nr_execve=59, nr_execveat=322, nr_ioctl=16)
ARM64 = Arch(name="ARM64", nr_bpf=280, nr_perf_event_open=241, nr_execve=221, nr_execveat=281, nr_ioctl=29)

# os.uname().machine spellings: Linux says aarch64, some tools arm64.
_BY_MACHINE = {"x86_64": X86_64, "amd64": X86_64, "aarch64": ARM64, "arm64": ARM64}


def current(machine: str | None = None) -> Arch:
    """This machine's constants; EnvironmentProblem on an architecture fntax does not know."""
    machine = machine or os.uname().machine
    found = _BY_MACHINE.get(machine)
    if found is None:
        raise EnvironmentProblem(
            f"architecture {machine!r} is not supported: fntax knows the syscall numbers and registers of "
            f"x86_64 and arm64 only (profiler/bpf/arch.py)")
    return found


def probe_cflags(machine: str | None = None) -> list[str]:
    """-D flags that give the probes this architecture's execve/execveat numbers and register branch."""
    arch = current(machine)
    return [f"-DFNTAX_NR_EXECVE={arch.nr_execve}", f"-DFNTAX_NR_EXECVEAT={arch.nr_execveat}",
            f"-DFNTAX_ARCH_{arch.name}=1"]


def kvm_probe_cflags(machine: str | None = None) -> list[str]:
    """-D flags for the KVM family's KVM_RUN hook on the raw syscall programs: the ioctl's number.

    (KVM_RUN itself, _IO(0xAE, 0x80), is the same request value on both.)"""
    return [f"-DFNTAX_NR_IOCTL={current(machine).nr_ioctl}"]
