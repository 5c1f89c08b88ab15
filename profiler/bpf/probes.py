"""The only module that imports bcc: compile, check, attach, read, detach.

Everything above this layer sees plain dataclasses from `profiler.model`.
"""

from __future__ import annotations

import ctypes
import mmap
from concurrent.futures import ThreadPoolExecutor
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import psutil

from profiler.bpf import decompress_targets
from profiler.system import host
from profiler.errors import EnvironmentProblem, ProbeAttachError, ProbeLoadError
from profiler.model import CallStats, Counters, KernelSnapshot, ProcessSample
from profiler.bpf.contracts import (
    MAP_ERROR_NAMES,
    PROBES_DIR,
    SHARED_HEADER,
    SYSCALL_SLOTS,
    MapDecl,
    check_loaded,
    family_path,
    parse_declarations,
)

FAMILIES: tuple[str, ...] = ("syscalls", "sched", "faults", "irq", "decompress")
# Workload id of the synthetic child that measures probe costs at load.
PROBE_COST_WORKLOAD = 0xFFFF

# perf software event ids (include/uapi/linux/perf_event.h).
_PERF_TYPE_SOFTWARE = 1
_PERF_COUNT_SW_PAGE_FAULTS_MIN = 5
_PERF_COUNT_SW_PAGE_FAULTS_MAJ = 6

_COUNTER_FIELDS = {
    # model.Counters field -> fntax_counters field
    "syscalls": "syscalls",
    "syscall_ns": "syscall_ns",
    "syscall_offcpu_ns": "syscall_offcpu_ns",
    "voluntary_switches": "voluntary",
    "involuntary_switches": "involuntary",
    "oncpu_ns": "oncpu_ns",
    "runqueue_ns": "runqueue_ns",
    "faults_user": "faults_user",
    "faults_kernel": "faults_kernel",
    "faults_minor": "faults_minor",
    "faults_major": "faults_major",
    "hardirq_ns": "hardirq_ns",
    "softirq_ns": "softirq_ns",
}


@dataclass(frozen=True)
class ProbeOptions:
    """What to load. Bounds become -D flags; nothing edits the C text."""

    families: tuple[str, ...] = FAMILIES
    trace_all: bool = False
    events: bool = False  # fork/exec/exit events to user space (the agent)
    # With events: the environment variable whose value execve's envp carries
    # to the exec event (the agent's first env rule).
    exec_env_name: str | None = None
    max_tasks: int = 65536
    max_procs: int = 16384
    max_proc_syscalls: int = 65536
    max_decomp: int = 16384
    extra_decompressors: tuple[str, ...] = ()  # "PATH_OR_LIB:SYMBOL"
    # Kernel BPF run-time statistics add two clock reads to every program
    # run, so by default they are on only while a short synthetic tracked
    # workload runs at load (probe_costs), which gives each probe's mean run
    # time for the observer figure. run_time_stats keeps them on throughout.
    run_time_stats: bool = False
    measure_probe_costs: bool = True
    probes_dir: Path = PROBES_DIR

    def cflags(self) -> list[str]:
        return [
            f"-I{self.probes_dir}",
            f"-DFNTAX_MAX_TASKS={self.max_tasks}",
            f"-DFNTAX_MAX_PROCS={self.max_procs}",
            f"-DFNTAX_MAX_PROC_SYSCALLS={self.max_proc_syscalls}",
            f"-DFNTAX_MAX_DECOMP={self.max_decomp}",
            f"-DFNTAX_TRACE_ALL={1 if self.trace_all else 0}",
            f"-DFNTAX_EVENTS={1 if self.events else 0}",
            *([f'-DFNTAX_ENV_NAME="{self.exec_env_name}"'] if self.events and self.exec_env_name else []),
            "-Wno-macro-redefined",
        ]


def module_source(options: ProbeOptions) -> str:
    """The BPF module text: the shared header first, then each family.

    bcc rewrites map declarations and TRACEPOINT_PROBEs only in its main text,
    so the header's text leads; its include guard turns each family's own
    `#include "fntax.h"` into a no-op.
    """
    parts = [(options.probes_dir / SHARED_HEADER).read_text()]
    for family in options.families:
        parts.append(f"/* ---- {family}.bpf.c ---- */\n")
        parts.append(family_path(family, options.probes_dir).read_text())
    return "\n".join(parts)


def check_environment() -> None:
    """Fail early, with one actionable line, when probes cannot load here."""
    if os.geteuid() != 0:
        raise EnvironmentProblem("root is needed to load eBPF probes (try: sudo fntax ...)")
    try:
        import bcc  # noqa: F401
    except ImportError as err:
        raise EnvironmentProblem(
            "bcc is not importable: install python3-bpfcc and run fntax from .venv (make bootstrap)"
        ) from err
    host.ensure_tracefs()
    build = Path(f"/lib/modules/{os.uname().release}/build")
    if not build.exists():
        raise EnvironmentProblem(f"no kernel headers at {build}: run `make bootstrap` to install or link them")


@dataclass(frozen=True)
class ProgramStats:
    """Kernel BPF run-time statistics of one loaded program (bpf_stats)."""

    runs: int
    run_ns: int

    @property
    def mean_ns(self) -> float:
        return self.run_ns / self.runs if self.runs else 0.0


_BPF_SYSCALL_NR = 321  # x86_64
_BPF_ENABLE_STATS = 32
_BPF_STATS_RUN_TIME = 0


def _enable_bpf_stats() -> int | None:
    """Turn on the kernel's BPF run-time accounting for as long as the fd lives.

    BPF_ENABLE_STATS reverts by itself when fntax exits, unlike the global
    sysctl kernel.bpf_stats_enabled. Returns None where the kernel refuses."""
    libc = ctypes.CDLL(None, use_errno=True)
    attr = (ctypes.c_uint32 * 32)()
    attr[0] = _BPF_STATS_RUN_TIME
    fd = int(libc.syscall(_BPF_SYSCALL_NR, _BPF_ENABLE_STATS, ctypes.byref(attr), ctypes.sizeof(attr)))
    return fd if fd >= 0 else None


def _fdinfo_stats(fd: int) -> ProgramStats:
    runs = run_ns = 0
    try:
        with open(f"/proc/self/fdinfo/{fd}") as info:
            for line in info:
                if line.startswith("run_time_ns:"):
                    run_ns = int(line.split()[1])
                elif line.startswith("run_cnt:"):
                    runs = int(line.split()[1])
    except OSError:
        pass
    return ProgramStats(runs=runs, run_ns=run_ns)


def _probe_name(func_name: str) -> str:
    """'tracepoint__sched__sched_switch' -> 'sched_switch', 'raw_tracepoint__sys_enter' -> 'sys_enter'."""
    return func_name.rsplit("__", 1)[-1]


@dataclass
class _Attached:
    tracepoints: list[str] = field(default_factory=list)
    perf_events: int = 0
    uprobes: list[str] = field(default_factory=list)


class KernelProbes:
    """A loaded, attached set of fntax probes. Use as a context manager."""

    def __init__(self, options: ProbeOptions | None = None) -> None:
        self.options = options or ProbeOptions()
        self._bpf: Any = None
        self._attached = _Attached()
        self._decomp_libraries: dict[int, str] = dict(enumerate(decompress_targets.LIBRARIES))
        self._syscall_names: dict[int, str] = {}
        self._stats_fd: int | None = None
        self._events_table: Any = None

    # -- lifecycle -----------------------------------------------------------
    def open(self) -> KernelProbes:
        check_environment()
        from bcc import BPF  # the one place bcc is imported

        source = module_source(self.options)
        wants_stats = self.options.run_time_stats or self.options.measure_probe_costs
        self._stats_fd = _enable_bpf_stats() if wants_stats else None
        self._probe_mean_ns: dict[str, float] = {}
        try:
            self._bpf = BPF(text=source, cflags=self.options.cflags())
        except Exception as err:  # bcc raises bare Exception on compile/load
            raise ProbeLoadError(f"probes failed to compile or load: {err}") from err
        try:
            self._check_contracts()
            self._attach_perf_faults()
            if "decompress" in self.options.families:
                self._attach_decompressors()
        except BaseException:
            self.close()
            raise
        self._attached.tracepoints = [
            name.decode() if isinstance(name, bytes) else str(name)
            for name in list(self._bpf.tracepoint_fds) + list(self._bpf.raw_tracepoint_fds)
        ]
        self._syscall_names = _syscall_table()
        if self.options.measure_probe_costs and self._stats_fd is not None:
            self._measure_probe_costs()
        return self

    def _measure_probe_costs(self) -> None:
        """Mean run time of each probe on a short synthetic tracked workload.

        The child makes syscalls, takes page faults and sleeps, tracked under
        a reserved workload id that no capture reads."""
        gate_read, gate_write = os.pipe()
        pid = os.fork()
        if pid == 0:
            try:
                os.close(gate_write)
                os.read(gate_read, 1)
                for _ in range(20_000):
                    os.getppid()
                buffer = mmap.mmap(-1, 4096 * 1024)
                for offset in range(0, len(buffer), 4096):
                    buffer[offset] = 1
                for _ in range(200):
                    time.sleep(0.0001)
            finally:
                os._exit(0)
        os.close(gate_read)
        self.track(pid, PROBE_COST_WORKLOAD)
        os.write(gate_write, b"g")
        os.close(gate_write)
        os.waitpid(pid, 0)
        self._probe_mean_ns = {k: v.mean_ns for k, v in self.program_stats().items() if v.runs}
        if not self.options.run_time_stats and self._stats_fd is not None:
            os.close(self._stats_fd)
            self._stats_fd = None

    def close(self) -> None:
        """Detach every probe and free every map (idempotent)."""
        if self._bpf is not None:
            bpf, self._bpf = self._bpf, None
            if self._events_table is not None:
                # Close the perf buffers while the map still exists: bcc's
                # own finaliser would try after cleanup() and print a traceback.
                for key in list(self._events_table._open_key_fds):
                    del self._events_table[key]
                self._events_table = None
            # Each uprobe's release waits for a kernel grace period (~0.1 s);
            # releasing them from several threads overlaps the waits.
            with ThreadPoolExecutor(max_workers=16) as pool:
                list(pool.map(bpf.detach_uprobe_event, list(bpf.uprobe_fds)))
            bpf.cleanup()
        if self._stats_fd is not None:
            os.close(self._stats_fd)
            self._stats_fd = None

    def __enter__(self) -> KernelProbes:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def attached(self) -> _Attached:
        return self._attached

    # -- set-up --------------------------------------------------------------
    def _check_contracts(self) -> None:
        decls: list[MapDecl] = []
        for family in self.options.families:
            decls.extend(parse_declarations(family_path(family, self.options.probes_dir)))
        for decl in decls:
            try:
                table = self._bpf.get_table(decl.name)
            except KeyError as err:
                raise ProbeLoadError(f"{decl.file}: declared map {decl.name} is not in the loaded object") from err
            # Per-CPU tables expose one value per CPU as Leaf; sLeaf is one CPU's.
            value_type = getattr(table, "sLeaf", table.Leaf)
            check_loaded(decl, int(table.ttype), ctypes.sizeof(table.Key), ctypes.sizeof(value_type))

    def _attach_perf_faults(self) -> None:
        if "faults" not in self.options.families:
            return
        for config, fn in ((_PERF_COUNT_SW_PAGE_FAULTS_MIN, "fntax_fault_minor"),
                           (_PERF_COUNT_SW_PAGE_FAULTS_MAJ, "fntax_fault_major")):
            try:
                self._bpf.attach_perf_event(ev_type=_PERF_TYPE_SOFTWARE, ev_config=config,
                                            fn_name=fn, sample_period=1)
            except Exception as err:
                raise ProbeAttachError(f"faults.bpf.c: perf software event {fn}: {err}") from err
            self._attached.perf_events += 1

    def _attach_decompressors(self) -> None:
        targets = decompress_targets.discover(self.options.extra_decompressors)
        for target in targets:
            try:
                self._bpf.attach_uprobe(name=target.path, sym=target.symbol, fn_name=target.entry_fn)
                if target.return_fn:
                    self._bpf.attach_uretprobe(name=target.path, sym=target.symbol, fn_name=target.return_fn)
            except Exception as err:
                raise ProbeAttachError(
                    f"decompress.bpf.c: uprobe {target.path}:{target.symbol}: {err}") from err
            self._attached.uprobes.append(f"{target.library}:{target.symbol}")
            self._decomp_libraries[target.lib_id] = target.library

    # -- tracking ------------------------------------------------------------
    def track(self, pid: int, workload: int = 1, tree: bool = False) -> None:
        """Attribute pid's threads (and, with tree, its descendants') to a workload.

        Children forked later follow automatically (sched_process_fork)."""
        tids = [pid]
        if tree:
            try:
                root = psutil.Process(pid)
                procs = [root, *root.children(recursive=True)]
                tids = [t.id for p in procs for t in _threads(p)] or [pid]
            except psutil.Error:
                tids = [pid]
        tasks = self._bpf["tasks"]
        for tid in tids:
            value = tasks.Leaf()
            value.workload = workload
            value.sys_nr = 0xFFFFFFFF
            tasks[tasks.Key(tid)] = value
        gen = self._bpf["track_gen"]
        gen[gen.Key(0)] = gen.Leaf(gen[gen.Key(0)].value + 1)

    # -- reading -------------------------------------------------------------
    def set_run_time_stats(self, on: bool) -> None:
        """Turn the kernel's BPF run-time statistics on or off (they cost every probe run)."""
        if on and self._stats_fd is None:
            self._stats_fd = _enable_bpf_stats()
        elif not on and self._stats_fd is not None:
            os.close(self._stats_fd)
            self._stats_fd = None

    def program_stats(self) -> dict[str, ProgramStats]:
        """Run count and run time of each loaded program, by probe name.

        Empty when the kernel would not enable BPF statistics."""
        if self._bpf is None:
            return {}
        stats: dict[str, ProgramStats] = {}
        for name, func in self._bpf.funcs.items():
            key = _probe_name(name.decode() if isinstance(name, bytes) else str(name))
            stats[key] = _fdinfo_stats(int(func.fd))
        return stats

    def snapshot(self) -> KernelSnapshot:
        """Read every map into plain dataclasses (unfolded per-CPU deltas included)."""
        bpf = self._bpf
        by_pid: dict[int, dict[str, Any]] = {}
        for key, proc in bpf["procs"].items():
            by_pid[int(key.value)] = {
                "comm": bytes(proc.comm).split(b"\0", 1)[0].decode(errors="replace"),
                "workload": int(proc.workload),
                "exited": bool(proc.exited),
                "counters": _counters(proc.c),
                "syscalls": {},
                "decomp": {},
            }
        self._add_unfolded(by_pid)
        for key, val in bpf["proc_syscalls"].items():
            entry = by_pid.get(int(key.tgid))
            if entry is None:
                continue
            name = self._syscall_name(int(key.nr))
            entry["syscalls"][name] = entry["syscalls"].get(name, CallStats()) + CallStats(int(val.count), int(val.ns))
        if "decompress" in self.options.families:
            for key, val in bpf["decomp"].items():
                entry = by_pid.get(int(key.tgid))
                if entry is None:
                    continue
                lib = self._decomp_libraries.get(int(key.lib), "unknown")
                entry["decomp"][lib] = entry["decomp"].get(lib, CallStats()) + CallStats(
                    int(val.count), int(val.ns), int(val.cpu_ns))
        processes = tuple(
            ProcessSample(pid=pid, comm=e["comm"], workload=e["workload"], exited=e["exited"],
                          counters=e["counters"], syscalls_by_name=e["syscalls"],
                          decompression_by_library=e["decomp"])
            for pid, e in sorted(by_pid.items())
        )
        return KernelSnapshot(processes=processes, map_update_failures=self.map_update_failures(), taken_at_ns=time.monotonic_ns(),
                              probe_mean_ns=self.probe_mean_ns())

    def probe_mean_ns(self) -> dict[str, float]:
        """Mean run time per probe: live statistics if on, else the load-time measurement."""
        live = {k: v.mean_ns for k, v in self.program_stats().items() if v.runs}
        return live or dict(self._probe_mean_ns)

    # -- continuous use (the agent) -------------------------------------------
    def open_events(self, on_event: Callable[[int, int, int, int, str | None], None]) -> None:
        """Deliver (type, pid, ppid, ts_ns, env value) of fork/exec/exit events; needs events=True."""
        table = self._bpf["events"]

        def handle(_cpu: int, data: Any, _size: int) -> None:
            ev = table.event(data)
            env = bytes(ev.env_value).split(b"\0", 1)[0].decode(errors="replace") if ev.has_env else None
            on_event(int(ev.type), int(ev.pid), int(ev.ppid), int(ev.ts_ns), env)

        table.open_perf_buffer(handle, page_cnt=256, lost_cb=self._lost)
        self._events_table = table

    def _lost(self, count: int) -> None:
        self.events_lost += count

    events_lost = 0

    def poll_events(self, timeout_ms: int) -> None:
        self._bpf.perf_buffer_poll(timeout=timeout_ms)

    def forget(self, pids: Iterable[int]) -> None:
        """Drop the map entries of exited processes (their figures were read)."""
        doomed = set(pids)
        if not doomed:
            return
        procs = self._bpf["procs"]
        for pid in doomed:
            try:
                del procs[procs.Key(pid)]
            except KeyError:
                pass
        for name in ("proc_syscalls", "decomp"):
            if name == "decomp" and "decompress" not in self.options.families:
                continue
            table = self._bpf[name]
            for key in [k for k in table.keys() if int(k.tgid) in doomed]:
                try:
                    del table[key]
                except KeyError:
                    pass

    def map_fill(self) -> tuple[dict[str, int], dict[str, int]]:
        """(entries, capacity) of the bounded per-process maps."""
        entries: dict[str, int] = {}
        capacity: dict[str, int] = {}
        for name in ("tasks", "procs", "proc_syscalls"):
            table = self._bpf[name]
            entries[name] = sum(1 for _ in table.keys())
            capacity[name] = int(table.max_entries)
        return entries, capacity

    def map_update_failures(self) -> dict[str, int]:
        errors = self._bpf["errors"]
        return {name: int(errors[errors.Key(i)].value) for i, name in MAP_ERROR_NAMES.items()}

    def _add_unfolded(self, by_pid: dict[int, dict[str, Any]]) -> None:
        """Add what tasks still on a CPU have not folded yet (a live --pid capture)."""
        for slot in self._bpf["cpu_state"][0]:
            if not slot.workload:
                continue
            delta = _counters(slot.delta)
            if delta == Counters():
                continue
            tgid = _tgid_of(int(slot.tid))
            if tgid is not None and tgid in by_pid:
                by_pid[tgid]["counters"] = by_pid[tgid]["counters"] + delta

    def _syscall_name(self, nr: int) -> str:
        if nr >= SYSCALL_SLOTS - 1:
            return "other"
        return self._syscall_names.get(nr, f"syscall_{nr}")


def _counters(raw: Any) -> Counters:
    return Counters(**{ours: int(getattr(raw, theirs)) for ours, theirs in _COUNTER_FIELDS.items()})


def _threads(proc: psutil.Process) -> Iterable[Any]:
    try:
        return proc.threads()
    except psutil.Error:
        return []


def _tgid_of(tid: int) -> int | None:
    try:
        with open(f"/proc/{tid}/status") as status:
            for line in status:
                if line.startswith("Tgid:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def _syscall_table() -> dict[int, str]:
    """Syscall names of this host, from bcc's table (ausyscall when present)."""
    from bcc.syscall import syscalls

    return {int(nr): name.decode() for nr, name in syscalls.items()}
