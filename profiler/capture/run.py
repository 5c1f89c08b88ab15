"""One capture: run a command (or watch a pid tree) under the probes.

This is the one-shot way of driving the pipeline; `fntax agent` is the
continuous one. The whole process tree is one workload (id 1): the root is
tracked before it runs a single instruction of CMD, and sched_process_fork
makes every descendant follow.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import time
from dataclasses import dataclass
from types import FrameType
from typing import Callable, ContextManager, Iterable, Iterator, Mapping, Protocol, Sequence

import psutil

from profiler.errors import InputError
from profiler.system import procfs
from profiler.system.host import host_info
from profiler.bpf.probes import KernelProbes, ProbeOptions
from profiler.model import (
    NS_PER_SECOND,
    CallStats,
    Capture,
    Counters,
    KernelSnapshot,
    ProcessSample,
    WorkloadSummary,
    Timeline,
    summarise,
)
from profiler.timings import NO_TIMINGS, Timings

WORKLOAD_ID = 1


class CaptureProbes(Protocol):
    """What a capture asks of probes: its own (KernelProbes) or a running
    agent's (profiler.capture.via_agent.AgentProbes)."""

    def track(self, pid: int, workload: int = 1, tree: bool = False, at_exec: bool = False) -> None: ...

    def snapshot(self) -> KernelSnapshot: ...

    def workload_tids(self, workload: int) -> set[int]: ...


class CgroupHook(Protocol):
    """The cgroup a run goes into (profiler.system.cgroup.FunctionCgroup)."""

    def join(self, pid: int) -> None: ...

    def throttled_ns(self) -> int: ...
# Exit code of a command killed by signal N, as shells report it.
SIGNAL_EXIT_BASE = 128
# Stopping a capture: SIGTERM to every process of the workload, SIGKILL to
# what is left after the grace period, and after this much longer fntax stops
# waiting for processes that SIGKILL does not end (stuck in the kernel).
STOP_GRACE_S = 2.0
STOP_PATIENCE_S = 5.0


@dataclass(frozen=True)
class Target:
    """What to capture: a command to start, or a running pid for a duration."""

    command: tuple[str, ...] = ()
    pid: int | None = None
    duration_seconds: float | None = None


def validate(target: Target) -> None:
    """Reject bad input before spending seconds compiling probes."""
    if target.pid is not None:
        if target.command:
            raise InputError("give either --pid or a command, not both")
        if target.pid <= 0 or not psutil.pid_exists(target.pid):
            raise InputError(f"no process with pid {target.pid}")
        if target.duration_seconds is not None and target.duration_seconds <= 0:
            raise InputError(f"--duration must be positive, got {target.duration_seconds}")
        return
    if not target.command:
        raise InputError("nothing to profile: give a command after -- or --pid PID")
    program = target.command[0]
    if os.sep in program:
        if not os.path.exists(program):
            raise InputError(f"command not found: {program}")
        if not os.access(program, os.X_OK) or os.path.isdir(program):
            raise InputError(f"command is not executable: {program}")
    elif shutil.which(program) is None:
        raise InputError(f"command not found: {program}")


class _StopRequest:
    """SIGINT/SIGTERM during a capture: stop, keep what was captured."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, object] = {}

    def _handle(self, signum: int, _frame: FrameType | None) -> None:
        self.signum = signum

    def __enter__(self) -> _StopRequest:
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)  # type: ignore[arg-type]


def run_capture(
    target: Target,
    options: ProbeOptions | None = None,
    progress: Callable[[str], None] | None = None,
) -> Capture:
    """Load the probes, capture the target once, detach, and summarise."""
    return run_captures(target, 1, options, progress)[0]


def run_captures(
    target: Target,
    count: int,
    options: ProbeOptions | None = None,
    progress: Callable[[str], None] | None = None,
    cgroup: CgroupHook | None = None,
    cpu_share: float | None = None,
    finish: Callable[[list[Capture]], None] | None = None,
    timings: Timings = NO_TIMINGS,
    agent: ContextManager[CaptureProbes] | None = None,
) -> list[Capture]:
    """Capture `count` runs of the command as fresh processes, probes loaded once.

    Each run is its own workload id, so runs never mix. `cgroup` takes each
    gated child before it runs (--cpu-share) and tells how long it throttled. A signal
    stops the series and returns the runs so far (the last one interrupted).
    With --pid, `count` must be 1. With `agent`, a running agent's probes
    are used instead of loading them here."""
    validate(target)
    say = progress or (lambda _msg: None)
    if agent is None:
        say("loading probes")
    captures: list[Capture] = []
    # Once the result is out (finish), the slow detach happens after this process has exited.
    with agent or KernelProbes(options, timings, detach_after_exit=finish is not None) as probes, \
            _StopRequest() as stop:
        if target.pid is not None:
            with timings.phase("run"):
                captures.append(_capture_pid(probes, target, stop, say))
        else:
            for run in range(count):
                if count > 1:
                    say(f"run {run + 1}/{count}")
                with timings.phase("run"):
                    captures.append(_capture_command(probes, target, stop, say, WORKLOAD_ID + run,
                                                     cgroup, quiet=count > 1, cpu_share=cpu_share))
                if stop.signum is not None:
                    break
        if finish is not None:
            with timings.phase("analysis"):
                finish(captures)  # while attached: the result is out before the slow detach
            timings.mark("result")
    return captures


def _capture_command(probes: CaptureProbes, target: Target, stop: _StopRequest,
                     say: Callable[[str], None], workload: int = WORKLOAD_ID,
                     cgroup: CgroupHook | None = None,
                     quiet: bool = False, cpu_share: float | None = None) -> Capture:
    child = _GatedChild(target.command)
    try:
        if cgroup is not None:
            cgroup.join(child.pid)
        throttled_before = cgroup.throttled_ns() if cgroup is not None else 0
        # Counting starts at the child's exec: the gate's own work is not the function's.
        probes.track(child.pid, workload, at_exec=True)
        misses_before = probes.snapshot().probe_misses
    except BaseException:
        child.abandon()
        raise
    if not quiet:
        say(f"running {' '.join(target.command)} (pid {child.pid})")
    started = time.monotonic_ns()
    child.release()
    exit_code = _wait(child.pid, stop, lambda: probes.workload_tids(workload))
    polled_wall_ns = time.monotonic_ns() - started
    throttled = cgroup.throttled_ns() - throttled_before if cgroup is not None else 0
    snapshot = _settled_snapshot(probes, workload)
    timeline = snapshot.timelines.get(workload)
    # The wall time is the kernel's: exec to the last task's last switch-out.
    # Polling only tells when to read it (or stands in if a task lives on).
    wall_ns = timeline.end_ns - timeline.start_ns if timeline is not None and timeline.ended else polled_wall_ns
    return _assemble(target.command, child.pid, exit_code, wall_ns, snapshot,
                     stop_signal=stop.signum, workload=workload, throttled_ns=throttled,
                     timeline=timeline if timeline is not None and timeline.start_ns else None,
                     cpu_share=cpu_share, misses_before=misses_before)


def _settled_snapshot(probes: CaptureProbes, workload: int, patience_s: float = 0.2) -> KernelSnapshot:
    """A snapshot once the workload's timeline has ended.

    waitpid returns when the child has exited, a moment before its last
    switch-out (which ends the timeline and folds its last on-CPU time)."""
    deadline = time.monotonic() + patience_s
    snapshot = probes.snapshot()
    while time.monotonic() < deadline:
        timeline = snapshot.timelines.get(workload)
        if timeline is None or timeline.ended or not timeline.start_ns:
            break
        time.sleep(0.002)
        snapshot = probes.snapshot()
    return snapshot


class _GatedChild:
    """A forked child held before exec until its pid is tracked.

    subprocess.Popen cannot do this: it blocks until the child has exec'd.
    A failed exec is reported back through a close-on-exec pipe.
    """

    def __init__(self, command: Sequence[str]) -> None:
        self._command = list(command)
        # Resolve the program now: execvp's PATH search in the child would
        # add failed execve calls to the function's figures.
        program = shutil.which(self._command[0]) if os.sep not in self._command[0] else self._command[0]
        self._program = program or self._command[0]
        gate_read, self._gate_write = os.pipe()
        self._err_read, err_write = os.pipe2(os.O_CLOEXEC)
        pid = os.fork()
        if pid == 0:  # child
            try:
                os.close(self._gate_write)
                os.close(self._err_read)
                if not os.read(gate_read, 1):
                    os._exit(127)  # fntax died before releasing us: never run untracked
                os.close(gate_read)
                signal.signal(signal.SIGINT, signal.SIG_DFL)
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
                os.execv(self._program, self._command)
            except OSError as err:
                os.write(err_write, (err.strerror or "exec failed").encode())
            finally:
                os._exit(127)
        self.pid = pid
        os.close(gate_read)
        os.close(err_write)

    def abandon(self) -> None:
        """Kill the held child (set-up failed before it ran)."""
        os.kill(self.pid, signal.SIGKILL)
        os.waitpid(self.pid, 0)
        os.close(self._gate_write)
        os.close(self._err_read)

    def release(self) -> None:
        os.write(self._gate_write, b"g")
        os.close(self._gate_write)
        failure = os.read(self._err_read, 512)  # EOF on a successful exec
        os.close(self._err_read)
        if failure:
            os.waitpid(self.pid, 0)
            raise InputError(f"cannot run {self._command[0]}: {failure.decode(errors='replace')}")


def _wait(pid: int, stop: _StopRequest, workload_tids: Callable[[], set[int]]) -> int:
    """Wait for the child; on SIGINT/SIGTERM stop the whole workload, then return the child's exit code.

    Stopping a capture stops the whole function: every process of the
    workload, the child's descendants and the ones that left its tree (a
    double fork reparents to init, setsid leaves the process group). The
    probes know them all: each task forked by one of the workload's is
    tracked from birth, by workload id. Each gets SIGTERM, what is left
    SIGKILL after STOP_GRACE_S, and the capture ends once none is left."""
    exit_code: int | None = None
    stopping_since: float | None = None
    termed: set[int] = set()
    while True:
        if exit_code is None:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                exit_code = os.waitstatus_to_exitcode(status) if os.WIFEXITED(status) else \
                    SIGNAL_EXIT_BASE + os.WTERMSIG(status)
        if stop.signum is None:
            if exit_code is not None:
                return exit_code  # ended on its own (what it left running is not stopped)
        else:
            now = time.monotonic()
            if stopping_since is None:
                stopping_since = now
            kill = now - stopping_since > STOP_GRACE_S
            left = _signal_workload(pid if exit_code is None else None, workload_tids,
                                    signal.SIGKILL if kill else signal.SIGTERM, () if kill else termed)
            termed |= left
            if exit_code is not None and (not left or now - stopping_since > STOP_GRACE_S + STOP_PATIENCE_S):
                return exit_code
        time.sleep(0.01)


def _signal_workload(root: int | None, workload_tids: Callable[[], set[int]], sig: signal.Signals,
                     skip: Iterable[int] = ()) -> set[int]:
    """Send sig to every process of the workload not in skip; returns the processes it has (tgids).

    root: the unreaped child (None once reaped); its descendants count too,
    should one have missed tracking (a full map). A tracked process is
    signalled through a pidfd opened before the tracked set is read again:
    the pid signalled is one the probes still count, never a reused number."""
    skip = set(skip)
    found: set[int] = set()
    untracked: set[int] = set()
    if root is not None:  # our unreaped child: its pid cannot be reused
        found.add(root)
        if root not in skip:
            with contextlib.suppress(ProcessLookupError):
                os.kill(root, sig)
        with contextlib.suppress(psutil.Error):
            untracked = {p.pid for p in psutil.Process(root).children(recursive=True)}
    handles: dict[int, tuple[int, int]] = {}  # tgid -> (a tracked tid of it, its pidfd)
    try:
        for tid in workload_tids():
            tgid = procfs.DEFAULT.tgid(tid)
            if tgid is None or tgid == root or tgid in handles:
                continue
            with contextlib.suppress(OSError):  # gone since
                handles[tgid] = (tid, os.pidfd_open(tgid))
        still = workload_tids()
        for tgid, (tid, fd) in handles.items():
            untracked.discard(tgid)
            if tid in still:
                found.add(tgid)
                if tgid not in skip:
                    with contextlib.suppress(ProcessLookupError):
                        signal.pidfd_send_signal(fd, sig)
    finally:
        for _tid, fd in handles.values():
            os.close(fd)
    for pid in untracked - skip:
        with contextlib.suppress(psutil.Error):
            psutil.Process(pid).send_signal(sig)
    return found | untracked


def _capture_pid(probes: CaptureProbes, target: Target, stop: _StopRequest,
                 say: Callable[[str], None]) -> Capture:
    assert target.pid is not None
    try:
        root = psutil.Process(target.pid)
        command = tuple(root.cmdline()) or (root.name(),)
    except psutil.Error as err:
        raise InputError(f"no process with pid {target.pid}") from err
    probes.track(target.pid, WORKLOAD_ID, tree=True)
    misses_before = probes.snapshot().probe_misses
    duration = target.duration_seconds
    say(f"attached to pid {target.pid}" + (f" for {duration:g} s" if duration else " until it exits or Ctrl-C"))
    started = time.monotonic_ns()
    deadline = None if duration is None else started + int(duration * NS_PER_SECOND)
    for _ in _ticks(0.05):
        if stop.signum is not None or not root.is_running():
            break
        if deadline is not None and time.monotonic_ns() >= deadline:
            break
    wall_ns = time.monotonic_ns() - started
    snapshot = probes.snapshot()
    return _assemble(command, target.pid, None, wall_ns, snapshot,
                     stop_signal=stop.signum, misses_before=misses_before)


def _ticks(seconds: float) -> Iterator[None]:
    while True:
        yield
        time.sleep(seconds)


def _assemble(command: Sequence[str], pid: int, exit_code: int | None, wall_ns: int,
              snapshot: KernelSnapshot, stop_signal: int | None,
              workload: int = WORKLOAD_ID, throttled_ns: int = 0, timeline: Timeline | None = None,
              cpu_share: float | None = None, misses_before: Mapping[str, int] | None = None) -> Capture:
    mine = tuple(p for p in snapshot.processes if p.workload == workload)
    before = misses_before or {}
    misses = {probe: count - before.get(probe, 0) for probe, count in snapshot.probe_misses.items()
              if count > before.get(probe, 0)}
    return Capture(command=tuple(command), pid=pid, exit_code=exit_code, host=host_info(),
                   workload=summarise(mine, wall_ns), per_process=mine,
                   map_update_failures=dict(snapshot.map_update_failures),
                   probe_mean_ns=dict(snapshot.probe_mean_ns),
                   throttled_ns=throttled_ns,
                   stop_signal=stop_signal, timeline=timeline, cpu_share=cpu_share, probe_misses=misses)
