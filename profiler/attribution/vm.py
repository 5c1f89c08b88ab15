"""Recognise VM monitors and name each VM by its id.

`identify_vm(facts)` (pure) takes what /proc says about one process (comm, argv,
cgroup lines, its threads' names) and returns a `VmIdentity` or None when the
process is not a VM monitor. Monitors are found by an ordered table of
patterns (Kepler's `internal/resource` style, plus Firecracker and its jailer,
which Kepler lacks); the first row that matches argv[0]'s base name (or the
comm when argv is empty: a zombie or an unreadable cmdline) decides.

VM ids:
* firecracker: `--id` (default "anonymous-instance"). Under the jailer the
  process is still firecracker (the jailer execs it, passing its own `--id`);
  when the jailer created a cgroup for it, that cgroup is
  `<base>/<parent>/<id>` (parent defaults to "firecracker", cgroup v1 and v2)
  and its last component is the id. With cgroup v2 and no `--cgroup`, the
  jailer creates no id directory: the id comes from `--id`.
* the jailer itself (before it execs firecracker): its `--id`.
* qemu-system-*: `-name` (`-name foo`, `-name guest=foo,debug-threads=on`;
  `,,` is an escaped comma); `-M`/`-machine` gives the machine (microvm).
* cloud-hypervisor: the file name (without extension) of `--api-socket`
  (`--api-socket /run/x.sock`, `--api-socket path=/run/x.sock`).
* crosvm: the file name of its control socket (`-s`/`--socket`).
No id found -> vm_id None (the caller labels it `unknown`).

vCPU threads by name: firecracker `fc_vcpu N`, QEMU `CPU N/KVM` (with
debug-threads=on; otherwise all threads share the process name), cloud-
hypervisor `vcpuN`, crosvm `crosvm_vcpuN`.

`read_vm_facts(pid, proc)` reads those facts through fntax's one /proc reader
(profiler.system.procfs; the tests point it at the fixtures under
tests/fixtures/vm/). Every thread of a VM monitor (vCPU, I/O, API threads)
belongs to the VM: attribution is per process, and its figures are the sum
of its threads'.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Callable, Sequence

from profiler.system.procfs import DEFAULT, ProcFS


class Monitor(enum.Enum):
    FIRECRACKER = "firecracker"
    QEMU = "qemu"
    CLOUD_HYPERVISOR = "cloud-hypervisor"
    CROSVM = "crosvm"


class IdSource(enum.Enum):
    ARG_ID = "--id"                  # firecracker's own --id
    JAILER_CGROUP = "jailer cgroup"  # <base>/<parent>/<id>
    JAILER_ARG = "jailer --id"       # the jailer process, before it execs firecracker
    QEMU_NAME = "-name"
    API_SOCKET = "--api-socket"
    CONTROL_SOCKET = "--socket"
    DEFAULT = "default"              # firecracker without --id: its built-in id
    NONE = "none"


FIRECRACKER_DEFAULT_ID = "anonymous-instance"
JAILER_DEFAULT_PARENT_CGROUP = "firecracker"


@dataclass(frozen=True)
class ProcessFacts:
    """What /proc says about one process."""

    comm: str
    cmdline: tuple[str, ...]
    cgroup_lines: tuple[str, ...] = ()
    thread_comms: tuple[str, ...] = ()


@dataclass(frozen=True)
class VmIdentity:
    monitor: Monitor
    vm_id: str | None
    id_source: IdSource
    machine: str | None = None          # qemu -M / -machine type (e.g. "microvm")
    jailed: bool = False                # firecracker under its jailer (or the jailer itself)
    vcpus: tuple[int, ...] = field(default_factory=tuple)   # vCPU indexes seen in thread names


@dataclass(frozen=True)
class MonitorPattern:
    """One row of the table: a monitor, the executable names it runs as, and its namer."""

    monitor: Monitor
    executable: re.Pattern[str]
    comm: re.Pattern[str]
    namer: Callable[[ProcessFacts], tuple[str | None, IdSource, bool]]


def _option(argv: Sequence[str], *names: str) -> str | None:
    """The value of the last `--opt VALUE` / `--opt=VALUE` (QEMU also takes -opt and --opt)."""
    value = None
    for i, arg in enumerate(argv):
        for name in names:
            if arg == name and i + 1 < len(argv):
                value = argv[i + 1]
            elif arg.startswith(name + "="):
                value = arg[len(name) + 1:]
    return value


def _qemu_opts(text: str) -> tuple[str | None, dict[str, str]]:
    """Split QEMU option syntax: an implied first value, then key=value pairs; ',,' is a comma."""
    parts, current, i = [], "", 0
    while i < len(text):
        if text[i] == ",":
            if text[i + 1:i + 2] == ",":
                current += ","
                i += 2
                continue
            parts.append(current)
            current = ""
        else:
            current += text[i]
        i += 1
    parts.append(current)
    implied = None
    pairs: dict[str, str] = {}
    for n, part in enumerate(parts):
        if "=" in part:
            key, _, value = part.partition("=")
            pairs[key] = value
        elif n == 0:
            implied = part
    return implied, pairs


def _cgroup_paths(lines: Sequence[str]) -> list[str]:
    """The paths of /proc/PID/cgroup lines (`hierarchy:controllers:path`)."""
    return [line.split(":", 2)[2] for line in lines if line.count(":") >= 2]


def _firecracker_id(facts: ProcessFacts) -> tuple[str | None, IdSource, bool]:
    arg_id = _option(facts.cmdline[1:], "--id")
    # The jailer passes --start-time-us to the firecracker it execs.
    jailed = _option(facts.cmdline[1:], "--start-time-us") is not None
    for path in _cgroup_paths(facts.cgroup_lines):
        parts = PurePosixPath(path).parts
        if len(parts) < 3:      # "/", name, ... : at least /<parent>/<id>
            continue
        if (arg_id is not None and parts[-1] == arg_id) or \
                (arg_id is None and parts[-2] == JAILER_DEFAULT_PARENT_CGROUP):
            return parts[-1], IdSource.JAILER_CGROUP, True
    if arg_id:
        return arg_id, IdSource.ARG_ID, jailed
    return FIRECRACKER_DEFAULT_ID, IdSource.DEFAULT, jailed


def _jailer_id(facts: ProcessFacts) -> tuple[str | None, IdSource, bool]:
    # Only the jailer's own options (before "--"; after it come firecracker's).
    argv = list(facts.cmdline[1:])
    if "--" in argv:
        argv = argv[:argv.index("--")]
    arg_id = _option(argv, "--id")
    return (arg_id, IdSource.JAILER_ARG, True) if arg_id else (None, IdSource.NONE, True)


def _qemu_id(facts: ProcessFacts) -> tuple[str | None, IdSource, bool]:
    name = _option(facts.cmdline[1:], "-name", "--name")
    if name is None:
        return None, IdSource.NONE, False
    implied, pairs = _qemu_opts(name)
    vm_id = pairs.get("guest", implied)
    return (vm_id, IdSource.QEMU_NAME, False) if vm_id else (None, IdSource.NONE, False)


def _socket_stem(value: str | None) -> str | None:
    if not value:
        return None
    implied, pairs = _qemu_opts(value)     # cloud-hypervisor: path=...,fd=... (same syntax)
    path = pairs.get("path", implied if implied and "=" not in implied else None)
    if not path:
        return None
    return PurePosixPath(path).stem or None


def _cloud_hypervisor_id(facts: ProcessFacts) -> tuple[str | None, IdSource, bool]:
    stem = _socket_stem(_option(facts.cmdline[1:], "--api-socket"))
    return (stem, IdSource.API_SOCKET, False) if stem else (None, IdSource.NONE, False)


def _crosvm_id(facts: ProcessFacts) -> tuple[str | None, IdSource, bool]:
    stem = _socket_stem(_option(facts.cmdline[1:], "--socket", "-s"))
    return (stem, IdSource.CONTROL_SOCKET, False) if stem else (None, IdSource.NONE, False)


# Ordered: the first row whose executable (argv[0]'s base name) or, without
# argv, whose comm matches decides. comm is at most 15 characters.
MONITORS: tuple[MonitorPattern, ...] = (
    MonitorPattern(Monitor.FIRECRACKER, re.compile(r"jailer"), re.compile(r"jailer"), _jailer_id),
    MonitorPattern(Monitor.FIRECRACKER, re.compile(r"firecracker(-v?[\d.]+)?(-x86_64|-aarch64)?"),
                   re.compile(r"firecracker"), _firecracker_id),
    MonitorPattern(Monitor.QEMU, re.compile(r"qemu-system-[\w.-]+|qemu-kvm"),
                   re.compile(r"qemu-system-.*|qemu-kvm"), _qemu_id),
    MonitorPattern(Monitor.CLOUD_HYPERVISOR, re.compile(r"cloud-hypervisor(-static)?"),
                   re.compile(r"cloud-hyperviso.*"), _cloud_hypervisor_id),
    MonitorPattern(Monitor.CROSVM, re.compile(r"crosvm"), re.compile(r"crosvm"), _crosvm_id),
)

_VCPU_THREAD: dict[Monitor, re.Pattern[str]] = {
    Monitor.FIRECRACKER: re.compile(r"fc_vcpu (\d+)"),
    Monitor.QEMU: re.compile(r"CPU (\d+)/KVM"),
    Monitor.CLOUD_HYPERVISOR: re.compile(r"vcpu(\d+)"),
    Monitor.CROSVM: re.compile(r"crosvm_vcpu(\d+)"),
}


def vcpu_index(monitor: Monitor, thread_comm: str) -> int | None:
    """The vCPU number a thread's name says it runs, or None."""
    match = _VCPU_THREAD[monitor].fullmatch(thread_comm.strip())
    return int(match.group(1)) if match else None


def match_monitor(facts: ProcessFacts) -> MonitorPattern | None:
    executable = PurePosixPath(facts.cmdline[0]).name if facts.cmdline and facts.cmdline[0] else ""
    for row in MONITORS:
        if executable:
            if row.executable.fullmatch(executable):
                return row
        elif row.comm.fullmatch(facts.comm.strip()):
            return row
    return None


def identify_vm(facts: ProcessFacts) -> VmIdentity | None:
    """The VM this process monitors, or None when it is not a VM monitor."""
    row = match_monitor(facts)
    if row is None:
        return None
    vm_id, source, jailed = row.namer(facts)
    machine = None
    if row.monitor is Monitor.QEMU:
        machine_opt = _option(facts.cmdline[1:], "-M", "-machine", "--machine")
        if machine_opt:
            implied, pairs = _qemu_opts(machine_opt)
            machine = pairs.get("type", implied)
    vcpus = sorted({i for comm in facts.thread_comms if (i := vcpu_index(row.monitor, comm)) is not None})
    return VmIdentity(row.monitor, vm_id, source, machine, jailed, tuple(vcpus))


def read_vm_facts(pid: int, proc: ProcFS = DEFAULT) -> ProcessFacts | None:
    """comm, argv, cgroup lines and thread names of one process; None once it is gone."""
    comm = proc.comm(pid)
    argv = proc.argv(pid)
    if comm is None or argv is None:
        return None
    cgroups = proc.cgroups(pid) or []
    lines = tuple(f"{e.hierarchy}:{','.join(e.controllers)}:{e.path}" for e in cgroups)
    threads = tuple(t.comm for t in proc.threads(pid) or [])
    return ProcessFacts(comm, tuple(argv), lines, threads)


def read_process_facts(proc_root: Path, pid: int) -> ProcessFacts:
    """The facts of one process under a /proc-shaped root (fixtures); FileNotFoundError if absent."""
    facts = read_vm_facts(pid, ProcFS(proc_root))
    if facts is None:
        raise FileNotFoundError(f"{proc_root}/{pid}")
    return facts
