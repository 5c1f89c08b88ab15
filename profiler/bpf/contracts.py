"""The declared contract of each probe family: its maps and their layouts.

Each `probes/*.bpf.c` file declares, in its leading comment, the maps it
exports to user space:

    fntax:map NAME KIND KEY VALUE

fntax checks these declarations against the loaded object (names, kinds, key
and value sizes) and fails naming the file and map. This module needs no
kernel, so the same checks run in unit tests. The ctypes mirrors below are the
user-space view of the structs in probes/fntax.h.
"""

from __future__ import annotations

import ctypes
import re
from dataclasses import dataclass
from pathlib import Path

from profiler.errors import ProbeLoadError

PROBES_DIR = Path(__file__).resolve().parent.parent.parent / "probes"
SHARED_HEADER = "fntax.h"

# Kernel map type numbers (include/uapi/linux/bpf.h).
MAP_KINDS: dict[str, int] = {"hash": 1, "array": 2, "percpu_hash": 5, "percpu_array": 6}

SYSCALL_SLOTS = 512
DIRTY_SLOTS = 16


class Counters(ctypes.Structure):
    _fields_ = [(name, ctypes.c_uint64) for name in (
        "syscalls", "syscall_ns", "syscall_offcpu_ns", "voluntary", "involuntary",
        "oncpu_ns", "runqueue_ns", "faults_user", "faults_kernel", "faults_minor",
        "faults_major", "hardirq_ns", "softirq_ns",
    )]


class Proc(ctypes.Structure):
    _fields_ = [("c", Counters), ("workload", ctypes.c_uint32),
                ("exited", ctypes.c_uint32), ("comm", ctypes.c_char * 16)]


class Task(ctypes.Structure):
    _fields_ = [("workload", ctypes.c_uint32), ("sys_nr", ctypes.c_uint32),
                ("sys_enter_ns", ctypes.c_uint64), ("offcpu_since_ns", ctypes.c_uint64),
                ("wait_since_ns", ctypes.c_uint64), ("oncpu_ns", ctypes.c_uint64)]


class Cpu(ctypes.Structure):
    _fields_ = [("tid", ctypes.c_uint32), ("workload", ctypes.c_uint32),
                ("sys_nr", ctypes.c_uint32), ("ndirty", ctypes.c_uint32),
                ("sys_enter_ns", ctypes.c_uint64), ("oncpu_since_ns", ctypes.c_uint64),
                ("hardirq_enter_ns", ctypes.c_uint64), ("softirq_enter_ns", ctypes.c_uint64),
                ("dirty", ctypes.c_uint32 * DIRTY_SLOTS), ("overflow", ctypes.c_uint32),
                ("track_gen", ctypes.c_uint32), ("delta", Counters)]


class SysKey(ctypes.Structure):
    _fields_ = [("tgid", ctypes.c_uint32), ("nr", ctypes.c_uint32)]


class SysVal(ctypes.Structure):
    _fields_ = [("count", ctypes.c_uint64), ("ns", ctypes.c_uint64)]


class DecompVal(ctypes.Structure):
    _fields_ = [("count", ctypes.c_uint64), ("ns", ctypes.c_uint64), ("cpu_ns", ctypes.c_uint64)]


class DecompKey(ctypes.Structure):
    _fields_ = [("tgid", ctypes.c_uint32), ("lib", ctypes.c_uint32)]


# C type name in a declaration -> its size in bytes.
TYPE_SIZES: dict[str, int] = {
    "u8": 1, "u32": 4, "u64": 8,
    "fntax_counters": ctypes.sizeof(Counters),
    "fntax_proc": ctypes.sizeof(Proc),
    "fntax_task": ctypes.sizeof(Task),
    "fntax_cpu": ctypes.sizeof(Cpu),
    "fntax_sys_key": ctypes.sizeof(SysKey),
    "fntax_sys_val": ctypes.sizeof(SysVal),
    "fntax_decomp_key": ctypes.sizeof(DecompKey),
    "fntax_decomp_val": ctypes.sizeof(DecompVal),
}

# Names of the errors map slots (enum fntax_map_error in probes/fntax.h).
MAP_ERROR_NAMES: dict[int, str] = {
    0: "tasks", 1: "procs", 2: "proc_syscalls", 3: "decomp_active", 4: "decomp",
}

_DECL = re.compile(r"fntax:map\s+(\w+)\s+(\w+)\s+(\w+)\s+(\w+)")


@dataclass(frozen=True)
class MapDecl:
    """One declared map: where it was declared and what it must look like."""

    file: str
    name: str
    kind: str
    key_type: str
    value_type: str

    @property
    def key_size(self) -> int:
        return TYPE_SIZES[self.key_type]

    @property
    def value_size(self) -> int:
        return TYPE_SIZES[self.value_type]


def parse_declarations(path: Path) -> list[MapDecl]:
    """Read the `fntax:map` lines of one probe file, validating kinds and types."""
    decls = []
    for match in _DECL.finditer(path.read_text()):
        name, kind, key, value = match.groups()
        if kind not in MAP_KINDS:
            raise ProbeLoadError(f"{path.name}: map {name}: unknown kind {kind!r}")
        for type_name in (key, value):
            if type_name not in TYPE_SIZES:
                raise ProbeLoadError(f"{path.name}: map {name}: unknown type {type_name!r}")
        decls.append(MapDecl(path.name, name, kind, key, value))
    return decls


def family_path(family: str, probes_dir: Path = PROBES_DIR) -> Path:
    return probes_dir / f"{family}.bpf.c"


def check_loaded(decl: MapDecl, map_type: int, key_size: int, value_size: int) -> None:
    """Compare one declaration with what the loaded object holds."""
    where = f"{decl.file}: map {decl.name}"
    if map_type != MAP_KINDS[decl.kind]:
        raise ProbeLoadError(f"{where}: declared {decl.kind}, loaded map type {map_type}")
    if key_size != decl.key_size:
        raise ProbeLoadError(f"{where}: key is {key_size} bytes, declared {decl.key_type} ({decl.key_size})")
    if value_size != decl.value_size:
        raise ProbeLoadError(
            f"{where}: value is {value_size} bytes, declared {decl.value_type} ({decl.value_size})")
