"""Syscall names by number for this machine, taken from the running system.

A fixed table goes stale: faccessat2 (439) showed as ``syscall_439`` while
``perf trace`` named it. Sources, in order (an earlier one wins a number):

1. The kernel UAPI headers: those of the running kernel's build tree
   (/lib/modules/RELEASE/build) and the installed ones (/usr/include, the
   linux-libc-dev package). Syscall numbers are ABI and never reused, so
   headers older than the kernel are right for every number they have.
2. The numbers from 424 on, which every architecture shares (the kernel
   unified its tables at 5.1): `_UNIFIED`, for kernels newer than their
   installed headers. Only names the running kernel's tracefs syscall events
   list are taken from it when tracefs can say.
3. An optional mapping from the caller (the loader passes bcc's table), last.

The tracefs syscall events (events/syscalls/sys_enter_NAME, present with
CONFIG_FTRACE_SYSCALLS) name every syscall the running kernel has, but their
format files carry only a ``__syscall_nr`` field, never the number: they say
*which* syscalls exist (`kernel_syscalls`), the headers say their numbers.

No bcc here: this runs, and is tested, without it.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Iterable, Mapping

TRACEFS = Path("/sys/kernel/tracing")

# Per machine: the Debian multiarch include directory, the header that
# defines the 64-bit numbers (arm64 before 6.11 includes asm-generic/unistd.h
# from asm/unistd.h; later it includes a generated asm/unistd_64.h), and the
# kernel build tree's arch directory.
_MACHINES: dict[str, tuple[str, str, str]] = {
    "x86_64": ("x86_64-linux-gnu", "asm/unistd_64.h", "x86"),
    "aarch64": ("aarch64-linux-gnu", "asm/unistd.h", "arm64"),
}
_MACHINES["arm64"] = _MACHINES["aarch64"]

# Shared by every architecture since Linux 5.1 (scripts/syscall.tbl, "common").
_UNIFIED: dict[int, str] = dict(enumerate((
    "pidfd_send_signal", "io_uring_setup", "io_uring_enter", "io_uring_register", "open_tree", "move_mount",
    "fsopen", "fsconfig", "fsmount", "fspick", "pidfd_open", "clone3", "close_range", "openat2", "pidfd_getfd",
    "faccessat2", "process_madvise", "epoll_pwait2", "mount_setattr", "quotactl_fd", "landlock_create_ruleset",
    "landlock_add_rule", "landlock_restrict_self", "memfd_secret", "process_mrelease", "futex_waitv",
    "set_mempolicy_home_node", "cachestat", "fchmodat2", "map_shadow_stack", "futex_wake", "futex_wait",
    "futex_requeue", "statmount", "listmount", "lsm_get_self_attr", "lsm_set_self_attr", "lsm_list_modules",
    "mseal", "setxattrat", "getxattrat", "listxattrat", "removexattrat", "open_tree_attr", "file_getattr",
    "file_setattr",
), start=424))

# tracefs names events after the kernel's SYSCALL_DEFINE names, which differ
# from the __NR_ names for a few old calls.
TRACEFS_ALIASES = {"newstat": "stat", "newlstat": "lstat", "newfstat": "fstat", "newuname": "uname",
                   "sendfile64": "sendfile", "umount": "umount2"}

# __NR_ macros that are not syscalls.
_NOT_SYSCALLS = {"syscalls", "arch_specific_syscall"}
# What a 64-bit compile for the machine predefines (and headers test).
_TARGET = {"x86_64": "__x86_64__", "aarch64": "__aarch64__", "arm64": "__aarch64__"}
_FIXED = {"__BITS_PER_LONG", "__LP64__", *_TARGET.values()}

_DEFINE = re.compile(r"#\s*define\s+__NR(3264)?_(\w+)\s+(.+?)\s*(?:/\*.*)?$")
_INCLUDE = re.compile(r'#\s*include\s+[<"]([^>"]+)[>"]')


def syscall_names(extra: Mapping[int, str] | None = None, *, machine: str | None = None,
                  include_dirs: Iterable[Path] | None = None, tracefs: Path = TRACEFS) -> dict[int, str]:
    """Every syscall number this system can name, with its name.

    On an architecture other than x86_64 and arm64 only `extra` is used: every
    other number reads as ``syscall_N`` (see `name_of`), a degraded but
    honest answer (profiler.bpf.arch refuses to build probes there anyway).
    """
    machine = machine or os.uname().machine
    names: dict[int, str] = {}
    layout = _MACHINES.get(machine)
    if layout is not None:
        header_sets = [list(include_dirs)] if include_dirs is not None else default_include_dirs(machine)
        for dirs in header_sets:
            for nr, name in parse_unistd(layout[1], dirs, machine).items():
                names.setdefault(nr, name)
        known = kernel_syscalls(tracefs)
        for nr, name in _UNIFIED.items():
            if nr not in names and (known is None or name in known):
                names[nr] = name
    for nr, name in (extra or {}).items():
        names.setdefault(int(nr), name)
    return names


def name_of(names: Mapping[int, str], nr: int) -> str:
    """The syscall's name, or ``syscall_N`` when no source knows the number."""
    return names.get(nr) or f"syscall_{nr}"


def default_include_dirs(machine: str, release: str | None = None) -> list[list[Path]]:
    """Two header trees, each read whole: the running kernel's build tree
    (its UAPI directories in -I order), then the installed headers."""
    triplet, _header, kernel_arch = _MACHINES[machine]
    build = Path("/lib/modules") / (release or os.uname().release) / "build"
    return [[build / "arch" / kernel_arch / "include" / "generated" / "uapi",
             build / "arch" / kernel_arch / "include" / "uapi",
             build / "include" / "uapi"],
            [Path("/usr/include") / triplet, Path("/usr/include")]]


def kernel_syscalls(tracefs: Path = TRACEFS) -> set[str] | None:
    """Names of the running kernel's syscalls from its tracefs syscall events
    (spelled as the __NR_ macros are); None when tracefs has no syscall events
    (not mounted, not readable, or a kernel without CONFIG_FTRACE_SYSCALLS)."""
    try:
        entries = os.listdir(tracefs / "events" / "syscalls")
    except OSError:
        return None
    found = {entry[len("sys_enter_"):] for entry in entries if entry.startswith("sys_enter_")}
    return {TRACEFS_ALIASES.get(name, name) for name in found} or None


def parse_unistd(header: str, include_dirs: Iterable[Path], machine: str = "x86_64") -> dict[int, str]:
    """Numbers and names from a UAPI unistd header, as a 64-bit user-space
    compile would see them: follows #include, evaluates the #if conditions
    asm-generic/unistd.h uses (__BITS_PER_LONG, __ARCH_WANT_*), resolves
    __NR_x defined as __NR3264_x. The first directory holding a header wins,
    like -I order; an unreadable tree gives {}."""
    macros = {"__BITS_PER_LONG": "64", "__LP64__": "1", _TARGET.get(machine, "__unknown__"): "1"}
    nr_values: dict[str, str] = {}
    _preprocess(header, list(include_dirs), macros, nr_values, set())
    names: dict[int, str] = {}
    for name, value in nr_values.items():
        number = _resolve(value, nr_values, macros)
        if number is not None and name not in _NOT_SYSCALLS and not name.startswith("3264"):
            names.setdefault(number, name)
    return names


def _preprocess(header: str, dirs: list[Path], macros: dict[str, str], nr_values: dict[str, str],
                seen: set[str]) -> None:
    path = next((d / header for d in dirs if (d / header).is_file()), None)
    if path is None or header in seen:
        return
    seen.add(header)
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return
    # Each frame: (this branch is taken, some branch of this #if was taken, the enclosing branch is taken).
    stack: list[tuple[bool, bool, bool]] = []
    active = True
    for raw in lines:
        line = raw.strip()
        if not line.startswith("#"):
            continue
        directive = line[1:].lstrip()
        word = directive.split(None, 1)[0] if directive else ""
        rest = directive[len(word):].strip()
        if word in ("if", "ifdef", "ifndef"):
            if word == "ifdef":
                taken = rest in macros
            elif word == "ifndef":
                taken = rest not in macros
            else:
                taken = _condition(rest, macros)
            stack.append((active and taken, taken, active))
            active = active and taken
        elif word == "elif" and stack:
            _taken, any_taken, outer = stack.pop()
            taken = not any_taken and _condition(rest, macros)
            stack.append((outer and taken, any_taken or taken, outer))
            active = outer and taken
        elif word == "else" and stack:
            _taken, any_taken, outer = stack.pop()
            stack.append((outer and not any_taken, True, outer))
            active = outer and not any_taken
        elif word == "endif" and stack:
            active = stack.pop()[2]
        elif not active:
            continue
        elif word == "include":
            found = _INCLUDE.match(line)
            if found:
                _preprocess(found.group(1), dirs, macros, nr_values, seen)
        elif word == "define":
            nr = _DEFINE.match(line)
            if nr:
                nr_values[("3264_" if nr.group(1) else "") + nr.group(2)] = nr.group(3)
            parts = rest.split(None, 1)
            # The word size and target are fixed by the caller: a header's
            # fallback definition (asm-generic/bitsperlong.h) must not change them.
            if parts and parts[0] not in _FIXED:
                macros[parts[0]] = parts[1] if len(parts) > 1 else "1"
        elif word == "undef" and rest not in _FIXED:
            macros.pop(rest, None)


def _resolve(value: str, nr_values: Mapping[str, str], macros: Mapping[str, str], depth: int = 0) -> int | None:
    """A __NR_ value: a number, another __NR_/__NR3264_ macro, or (__NR_x + N)."""
    if depth > 8:
        return None
    value = value.strip().strip("()").strip()
    if value.isdigit():
        return int(value)
    total = 0
    for term in value.split("+"):
        term = term.strip().strip("()").strip()
        if term.isdigit():
            total += int(term)
            continue
        ref = re.fullmatch(r"__NR(3264)?_(\w+)", term)
        if ref is None:
            return None
        key = ("3264_" if ref.group(1) else "") + ref.group(2)
        found = nr_values.get(key)
        number = _resolve(found, nr_values, macros, depth + 1) if found is not None else None
        if number is None:
            return None
        total += number
    return total


_TOKEN = re.compile(r"\s*(\w+|&&|\|\||==|!=|>=|<=|[()!<>])")
_COMPARE = {"==": int.__eq__, "!=": int.__ne__, ">=": int.__ge__, "<=": int.__le__, ">": int.__gt__,
            "<": int.__lt__}


def _condition(text: str, macros: Mapping[str, str]) -> bool:
    """A preprocessor condition over defined(), integer macros, !, &&, ||, comparisons
    and parentheses. What it cannot read is false, as an undefined macro is to cpp."""
    text = text.split("/*", 1)[0].split("//", 1)[0]
    tokens: list[str] = []
    pos = 0
    while pos < len(text.rstrip()):
        found = _TOKEN.match(text, pos)
        if found is None:
            return False
        tokens.append(found.group(1))
        pos = found.end()
    try:
        value, used = _or(tokens, 0, macros)
    except (IndexError, ValueError):
        return False
    return used == len(tokens) and value != 0


def _or(tokens: list[str], at: int, macros: Mapping[str, str]) -> tuple[int, int]:
    value, at = _and(tokens, at, macros)
    while at < len(tokens) and tokens[at] == "||":
        right, at = _and(tokens, at + 1, macros)
        value = int(bool(value) or bool(right))
    return value, at


def _and(tokens: list[str], at: int, macros: Mapping[str, str]) -> tuple[int, int]:
    value, at = _compare(tokens, at, macros)
    while at < len(tokens) and tokens[at] == "&&":
        right, at = _compare(tokens, at + 1, macros)
        value = int(bool(value) and bool(right))
    return value, at


def _compare(tokens: list[str], at: int, macros: Mapping[str, str]) -> tuple[int, int]:
    value, at = _unary(tokens, at, macros)
    while at < len(tokens) and tokens[at] in _COMPARE:
        right, after = _unary(tokens, at + 1, macros)
        value, at = int(_COMPARE[tokens[at]](value, right)), after
    return value, at


def _unary(tokens: list[str], at: int, macros: Mapping[str, str]) -> tuple[int, int]:
    token = tokens[at]
    if token == "!":
        value, at = _unary(tokens, at + 1, macros)
        return int(not value), at
    if token == "(":
        value, at = _or(tokens, at + 1, macros)
        if tokens[at] != ")":
            raise ValueError("unbalanced parenthesis")
        return value, at + 1
    if token == "defined":
        if tokens[at + 1] == "(":
            name, at = tokens[at + 2], at + 3
            if tokens[at] != ")":
                raise ValueError("unbalanced parenthesis")
            return int(name in macros), at + 1
        return int(tokens[at + 1] in macros), at + 2
    if token.isdigit():
        return int(token), at + 1
    if re.fullmatch(r"\w+", token):
        defined_as = macros.get(token, "0").strip()  # cpp reads an undefined name as 0
        return (int(defined_as) if defined_as.isdigit() else 0), at + 1
    raise ValueError(f"unexpected {token!r}")
