"""KernelProbes: one loaded, attached set of fntax probes (the BPF layer's facade).

It wires the pieces of this subpackage: the loader (compile, contracts,
attach), the map reader (snapshots), the event stream and the probe-cost
measurement. Everything above this layer sees plain dataclasses from
`profiler.model`.
"""

from __future__ import annotations

import fcntl
import os
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, Iterable

import psutil

from profiler.bpf import probe_cost
from profiler.bpf.events import EventStream, ProcessEvent
from profiler.bpf.loader import (
    Attached,
    ProbeOptions,
    attach_all,
    check_environment,
    compile_module,
    detach_all,
    effective_families,
    module_source,
)
from profiler.bpf.contracts import load_header
from profiler.bpf.snapshot import MapReader
from profiler.bpf.syscall_names import name_of, syscall_names
from profiler.model import KernelSnapshot
from profiler.timings import NO_TIMINGS, Timings
from profiler.system import procfs

__all__ = ["KernelProbes", "ProbeOptions", "ProgramStats", "check_environment", "effective_families", "module_source",
           "PROBE_COST_WORKLOAD"]

ProgramStats = probe_cost.ProgramStats
# Workload id of the synthetic child that measures probe costs at load.
PROBE_COST_WORKLOAD = 0xFFFF
_NO_SYSCALL = 0xFFFFFFFF
# The probe whose unseen switches count as its skipped runs (MapReader.switches_unseen).
SWITCH_PROBE = "sched:sched_switch"


class KernelProbes:
    """A loaded, attached set of fntax probes. Use as a context manager."""

    def __init__(self, options: ProbeOptions | None = None, timings: Timings = NO_TIMINGS,
                 detach_after_exit: bool = False) -> None:
        self.options = options or ProbeOptions()
        # Leave the slow part of detaching (kernel grace periods, ~0.1 s per
        # probe) to a helper that outlives this process (fntax profile: its
        # user waits for the prompt, not for the kernel).
        self.detach_after_exit = detach_after_exit
        self.timings = timings
        self._bpf: Any = None
        self._attached = Attached()
        self._stats_fd: int | None = None
        self._events: EventStream | None = None
        self._reader: MapReader | None = None
        self._probe_mean_ns: dict[str, float] = {}
        self._syscall_names: dict[int, str] = {}

    # -- lifecycle -----------------------------------------------------------
    def open(self) -> KernelProbes:
        check_environment()
        reused = probe_cost.cached_means(self.options) if self.options.reuse_probe_costs and \
            self.options.measure_probe_costs and not self.options.run_time_stats else None
        measure = self.options.measure_probe_costs and reused is None
        wants_stats = self.options.run_time_stats or measure
        self._stats_fd = probe_cost.enable_stats() if wants_stats else None
        with self.timings.phase("compile"):
            self._bpf = compile_module(self.options)
        with self.timings.phase("earlier teardown"):
            wait_for_earlier_teardowns()
        try:
            with self.timings.phase("attach"):
                self._attached, libraries = attach_all(self._bpf, self.options)
        except BaseException:
            self.close()
            raise
        self._syscall_names = _syscall_table()
        slots = load_header(self.options.probes_dir).define("FNTAX_SYSCALL_SLOTS")

        def syscall_name(nr: int) -> str:
            return "other" if nr >= slots - 1 else name_of(self._syscall_names, nr)

        self._reader = MapReader(self._bpf, "decompress" in self.options.families, syscall_name,
                                 lambda lib: libraries.get(lib, "unknown"), procfs.DEFAULT.tgid)
        if reused is not None:
            self._probe_mean_ns = reused
        elif measure and self._stats_fd is not None:
            with self.timings.phase("probe cost"):
                probe_cost.run_synthetic_workload(lambda pid: self.track(pid, PROBE_COST_WORKLOAD))
            self._probe_mean_ns = {k: v.mean_ns for k, v in self.program_stats().items() if v.runs}
            if not self.options.run_time_stats:
                self.set_run_time_stats(False)
            if self.options.reuse_probe_costs and self._probe_mean_ns:
                probe_cost.remember_means(self.options, self._probe_mean_ns)
        return self

    def close(self) -> None:
        """Detach every probe and free every map (idempotent)."""
        if self._bpf is not None:
            bpf, self._bpf = self._bpf, None
            if self._events is not None:
                self._events.close()
                self._events = None
            with self.timings.phase("detach"):
                if self.detach_after_exit:
                    hand_over_teardown()
                detach_all(bpf)
        self.set_run_time_stats(False)

    def __enter__(self) -> KernelProbes:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def attached(self) -> Attached:
        return self._attached

    @property
    def reader(self) -> MapReader:
        assert self._reader is not None, "probes are not open"
        return self._reader

    # -- tracking ------------------------------------------------------------
    def track(self, pid: int, workload: int = 1, tree: bool = False, at_exec: bool = False) -> None:
        """Attribute pid's threads (and, with tree, its descendants') to a workload.

        Children forked later follow automatically (sched_process_fork). With
        at_exec, counting (and the workload's timeline) starts at pid's next
        exec: what it does before is not the workload's."""
        tids = [pid]
        if tree:
            try:
                root = psutil.Process(pid)
                tids = [t.id for p in (root, *root.children(recursive=True)) for t in _threads(p)] or [pid]
            except psutil.Error:
                tids = [pid]
        if at_exec and self.options.timeline:
            self.reader.start_timeline(workload)
        tasks = self._bpf["tasks"]
        for tid in tids:
            key = tasks.Key(tid)
            try:
                # System-wide (the agent), a task has an entry already: keep
                # its in-flight state, change only what it counts for.
                value = tasks[key]
            except KeyError:
                value = tasks.Leaf()
                value.sys_nr = _NO_SYSCALL
            value.workload = 0 if at_exec else workload
            value.arm_workload = workload if at_exec else 0
            if at_exec:
                value.sys_nr = _NO_SYSCALL  # nothing before its exec is counted
            tasks[key] = value
        gen = self._bpf["track_gen"]
        gen[gen.Key(0)] = gen.Leaf(gen[gen.Key(0)].value + 1)

    # -- reading -------------------------------------------------------------
    def snapshot(self, with_misses: bool = True, exited_only: bool = False) -> KernelSnapshot:
        """Every map read now; with_misses, each program's skipped runs too
        (one fdinfo read per program: the agent's fold, which never reads
        them, leaves them out); exited_only, only processes that exited."""
        snapshot = self.reader.snapshot(self.probe_mean_ns(), exited_only)
        if not with_misses:
            return snapshot
        misses = probe_cost.program_misses(self._bpf)
        # A switch the kernel made without firing sched_switch is a run of
        # that probe skipped as surely as a recursion miss.
        if SWITCH_PROBE in misses:
            misses[SWITCH_PROBE] += self.reader.switches_unseen()
        return replace(snapshot, probe_misses=misses)

    def set_run_time_stats(self, on: bool) -> None:
        """Turn the kernel's BPF run-time statistics on or off (they cost every probe run)."""
        if on and self._stats_fd is None:
            self._stats_fd = probe_cost.enable_stats()
        elif not on and self._stats_fd is not None:
            os.close(self._stats_fd)
            self._stats_fd = None

    @property
    def stats_on(self) -> bool:
        """Kernel BPF run-time statistics are being collected now."""
        return self._stats_fd is not None

    def program_stats(self) -> dict[str, probe_cost.ProgramStats]:
        """Run count and run time of each loaded program, by probe label (empty without stats)."""
        return probe_cost.program_stats(self._bpf) if self._bpf is not None else {}

    def probe_mean_ns(self) -> dict[str, float]:
        """Mean run time per probe: the latest while statistics are on, else the last measured."""
        if self.stats_on:
            live = {k: v.mean_ns for k, v in self.program_stats().items() if v.runs}
            if live:
                self._probe_mean_ns = live
        return dict(self._probe_mean_ns)

    # -- continuous use (the agent) -------------------------------------------
    def open_events(self, on_event: Callable[[ProcessEvent], None], page_count: int | None = None) -> EventStream:
        """Fork/exec events (processes, not threads) to `on_event` while polled; needs events=True.

        page_count: the perf buffer's pages per CPU (None: FNTAX_EVENT_PAGES, else the default)."""
        self._events = EventStream(self._bpf, on_event, page_count)
        return self._events

    @property
    def events_lost(self) -> int:
        return self._events.lost if self._events is not None else 0

    def poll_events(self, timeout_ms: int) -> None:
        if self._events is not None:
            self._events.poll(timeout_ms)

    def forget(self, pids: Iterable[int]) -> None:
        self.reader.forget(pids)

    def map_fill(self) -> tuple[dict[str, int], dict[str, int]]:
        return self.reader.map_fill()

    def map_update_failures(self) -> dict[str, int]:
        return self.reader.map_update_failures()

    def workload_tids(self, workload: int) -> set[int]:
        """Live threads the probes count (or will at exec) for a workload, read now.

        Every task forked by one of the workload's is in it from birth
        (sched_process_fork, before the child first runs), reparented or in a
        session of its own; its entry goes at its last switch-out. Read-only."""
        tasks = self._bpf["tasks"]
        return {int(key.value) for key, task in tasks.items()
                if task.workload == workload or task.arm_workload == workload}


def hand_over_teardown() -> bool:
    """Fork a helper that holds every file of this process (the probes' with
    them) until this process has exited, then exits itself.

    A probe detaches when the last descriptor of it closes, and that close
    waits on the kernel (grace periods): with the helper holding a copy,
    this process's own closes are cheap and it exits at once; the helper's
    exit does the waiting, in the background. Nothing stays attached: the
    helper ends as soon as this process does, however it ends (a pipe's
    EOF), and its standard streams are /dev/null, so nobody waiting on this
    process's output waits for it. False if no helper could be started."""
    read_end, write_end = os.pipe()  # not inherited by anything this process execs
    # Held (shared) by the helper until its teardown is done: the next set of
    # probes to load waits for it (wait_for_earlier_teardowns).
    lock = _teardown_lock()
    if lock is not None:
        fcntl.flock(lock, fcntl.LOCK_SH)
    try:
        pid = os.fork()
    except OSError:
        os.close(read_end)
        os.close(write_end)
        if lock is not None:
            os.close(lock)
        return False
    if pid == 0:  # the helper: nothing but waiting, then exiting
        try:
            os.close(write_end)
            os.setsid()  # a Ctrl-C for the terminal's job does not cut its teardown short
            null = os.open(os.devnull, os.O_RDWR)
            for fd in (0, 1, 2):
                os.dup2(null, fd)
            _keep_only_probe_files({0, 1, 2, read_end, *([lock] if lock is not None else [])})
            os.read(read_end, 1)  # EOF: the parent has exited
            # The probes first, one by one (each close waits on the kernel),
            # the lock last: an exit would close them in descriptor order.
            _keep_only_probe_files({lock} if lock is not None else set(), close_probes=True)
        finally:
            os._exit(0)
    os.close(read_end)
    if lock is not None:
        os.close(lock)  # the helper's copy holds the lock now
    # write_end stays open until this process exits (deliberately never closed).
    return True


TEARDOWN_LOCK = Path("/run/fntax/teardown.lock")
TEARDOWN_PATIENCE_S = 30.0


def _teardown_lock() -> int | None:
    try:
        TEARDOWN_LOCK.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        return os.open(TEARDOWN_LOCK, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError:
        return None


def wait_for_earlier_teardowns(patience_s: float = TEARDOWN_PATIENCE_S) -> None:
    """Until the probes an earlier fntax left to a helper are detached (at most
    patience_s): while they detach, the kernel's tracepoint and uprobe locks
    are busy with them, which would slow this attach and the workload's own
    execs and mmaps that this capture measures."""
    lock = _teardown_lock()
    if lock is None:
        return
    try:
        deadline = time.monotonic() + patience_s
        while True:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                if time.monotonic() > deadline:
                    return
                time.sleep(0.05)
    finally:
        os.close(lock)  # releases it too


def _keep_only_probe_files(keep: set[int], close_probes: bool = False) -> None:
    """Close every descriptor but `keep` and the kernel objects probes are made
    of (BPF programs, maps and links, perf events: anonymous inodes; those
    too with close_probes). A listening socket or an open file must not
    outlive the process that opened it: the agent restarted at once needs
    its port again."""
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        if fd in keep:
            continue
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue  # the directory listing's own descriptor, closed since
        if close_probes or not target.startswith("anon_inode:"):
            os.close(fd)


def _threads(proc: psutil.Process) -> Iterable[Any]:
    try:
        return proc.threads()
    except psutil.Error:
        return []


def _syscall_table() -> dict[int, str]:
    """Syscall names of the running system (profiler.bpf.syscall_names), bcc's table last."""
    from bcc.syscall import syscalls

    return syscall_names({int(nr): name.decode() for nr, name in syscalls.items()})
