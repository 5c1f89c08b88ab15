"""Syscall names from UAPI headers and tracefs: fixtures for the parser, this host for coverage."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from profiler.bpf import arch
from profiler.bpf.syscall_names import (
    _condition,
    default_include_dirs,
    kernel_syscalls,
    name_of,
    parse_unistd,
    syscall_names,
)
from profiler.errors import EnvironmentProblem

FIXTURE = Path(__file__).resolve().parent.parent / "fixtures" / "unistd"
NO_TRACEFS = FIXTURE / "nowhere"
ARM64_DIRS = [FIXTURE / "aarch64", FIXTURE / "generic"]


def test_x86_64_header_with_conditions_and_arithmetic() -> None:
    names = parse_unistd("asm/unistd_64.h", [FIXTURE / "x86_64"], "x86_64")
    assert names[0] == "read" and names[59] == "execve" and names[439] == "faccessat2" and names[449] == "futex_waitv"
    assert names[901] == "only_on_x86_64"
    assert not {900, 902, 903} & set(names)
    assert names[247] == "arch_call"  # (__NR_arch_specific_syscall + 3)
    assert 244 not in names  # a marker, not a syscall


def test_arm64_from_the_generic_table() -> None:
    names = parse_unistd("asm/unistd.h", ARM64_DIRS, "aarch64")
    by_name = {name: nr for nr, name in names.items()}
    assert by_name["read"] == 63 and by_name["openat"] == 56 and by_name["clone3"] == 435
    # 64-bit spellings of the __NR3264_ calls, never the 32-bit ones.
    assert (by_name["fcntl"], by_name["lseek"], by_name["mmap"], by_name["fstat"], by_name["newfstatat"]) == \
        (25, 62, 222, 80, 79)
    assert not {"fcntl64", "llseek", "mmap2", "fstat64", "fstatat64"} & set(by_name)
    # Wanted by arm64's asm/unistd.h (__ARCH_WANT_RENAMEAT, _SET_GET_RLIMIT).
    assert (by_name["renameat"], by_name["getrlimit"]) == (38, 163)
    assert "sync_file_range" in by_name and "sync_file_range2" not in by_name
    assert "syscalls" not in by_name and "arch_specific_syscall" not in by_name
    # The constants the probes and doctor use agree with the table.
    assert (by_name["execve"], by_name["execveat"], by_name["bpf"], by_name["perf_event_open"]) == \
        (arch.ARM64.nr_execve, arch.ARM64.nr_execveat, arch.ARM64.nr_bpf, arch.ARM64.nr_perf_event_open)


def test_arm64_syscall_names_with_unified_tail() -> None:
    names = syscall_names(machine="aarch64", include_dirs=ARM64_DIRS, tracefs=NO_TRACEFS)
    assert names[439] == "faccessat2"
    assert names[462] == "mseal"  # newer than the 6.1 header: from the shared numbering


def test_tracefs_says_which_unified_numbers_this_kernel_has() -> None:
    dirs = [FIXTURE / "x86_64"]
    with_tracefs = syscall_names(machine="x86_64", include_dirs=dirs, tracefs=FIXTURE / "tracefs")
    assert with_tracefs[451] == "cachestat"  # listed by the fixture's events
    assert 462 not in with_tracefs  # mseal: this "kernel" has no event for it
    without = syscall_names(machine="x86_64", include_dirs=dirs, tracefs=NO_TRACEFS)
    assert without[462] == "mseal"  # no tracefs to ask: the shared numbering stands


def test_tracefs_names_spelled_as_the_headers() -> None:
    assert kernel_syscalls(FIXTURE / "tracefs") == {"read", "fstat", "cachestat", "faccessat2"}
    assert kernel_syscalls(NO_TRACEFS) is None


def test_extra_mapping_comes_last() -> None:
    names = syscall_names({0: "not_read", 700: "from_bcc"}, machine="x86_64", include_dirs=[FIXTURE / "x86_64"],
                          tracefs=NO_TRACEFS)
    assert names[0] == "read" and names[700] == "from_bcc"


def test_other_architectures_name_only_what_they_are_given() -> None:
    names = syscall_names({5: "five"}, machine="riscv64")
    assert names == {5: "five"}
    assert name_of(names, 5) == "five" and name_of(names, 439) == "syscall_439"


def test_conditions() -> None:
    macros = {"__BITS_PER_LONG": "64", "A": "1"}
    assert _condition("__BITS_PER_LONG == 64 && !defined(__SYSCALL_COMPAT)", macros)
    assert _condition("defined(A) || defined B", macros)
    assert not _condition("!defined A", macros)
    assert _condition("(A > 0) && (B || A) /* comment */", macros)
    assert not _condition("(1", macros)
    assert not _condition("1 +", macros)


def test_arch_constants_and_cflags() -> None:
    assert arch.probe_cflags("x86_64") == ["-DFNTAX_NR_EXECVE=59", "-DFNTAX_NR_EXECVEAT=322", "-DFNTAX_ARCH_X86_64=1"]
    assert arch.probe_cflags("aarch64") == ["-DFNTAX_NR_EXECVE=221", "-DFNTAX_NR_EXECVEAT=281", "-DFNTAX_ARCH_ARM64=1"]
    assert (arch.current("x86_64").nr_bpf, arch.current("x86_64").nr_perf_event_open) == (321, 298)
    assert (arch.current("aarch64").nr_bpf, arch.current("aarch64").nr_perf_event_open) == (280, 241)
    with pytest.raises(EnvironmentProblem, match="riscv64"):
        arch.probe_cflags("riscv64")


def test_probe_uses_the_named_constants() -> None:
    source = (Path(__file__).resolve().parents[2] / "probes" / "syscalls.bpf.c").read_text()
    assert "id == FNTAX_NR_EXECVE || id == FNTAX_NR_EXECVEAT" in source
    assert "regs->dx" not in source and "regs->r10" not in source  # only behind FNTAX_EXECVE*_ENVP


# ---- this host ----

def _host_headers_number(name: str, machine: str) -> bool:
    layout = {"x86_64": "asm/unistd_64.h", "aarch64": "asm/unistd.h"}[machine]
    return any(name in parse_unistd(layout, dirs, machine).values() for dirs in default_include_dirs(machine))


@pytest.mark.skipif(os.uname().machine not in ("x86_64", "aarch64"), reason="x86_64 and arm64 only")
def test_every_syscall_event_of_this_kernel_is_named() -> None:
    known = kernel_syscalls()
    if known is None:
        pytest.skip("no tracefs syscall events here (not mounted, or CONFIG_FTRACE_SYSCALLS off)")
    machine = os.uname().machine
    named = set(syscall_names(machine=machine).values())
    missing = sorted(name for name in known - named)
    # What is still unnamed must be newer than every header on this host and
    # outside the shared numbering (x86_64's uprobe/uretprobe on 6.1 headers).
    assert all(not _host_headers_number(name, machine) for name in missing), missing


@pytest.mark.skipif(os.uname().machine != "x86_64", reason="x86_64 numbers")
def test_this_host_names_faccessat2_and_agrees_with_arch() -> None:
    names = syscall_names()
    assert names[439] == "faccessat2"
    by_name = {name: nr for nr, name in names.items()}
    assert (by_name["execve"], by_name["execveat"], by_name["bpf"], by_name["perf_event_open"]) == \
        (arch.X86_64.nr_execve, arch.X86_64.nr_execveat, arch.X86_64.nr_bpf, arch.X86_64.nr_perf_event_open)


def test_agrees_with_bcc_where_both_know_a_number() -> None:
    syscall = pytest.importorskip("bcc.syscall")  # an independent table, when bcc is installed
    theirs = {int(nr): name.decode() for nr, name in syscall.syscalls.items()}
    ours = syscall_names()
    assert {nr: ours[nr] for nr in theirs if nr in ours} == {nr: theirs[nr] for nr in theirs if nr in ours}
    assert set(theirs) <= set(ours)
