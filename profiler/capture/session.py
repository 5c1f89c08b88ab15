"""One `fntax profile` session: check every input, then capture, analyse, write.

Everything that can be wrong with the user's input (price file, baseline,
memory size, output paths, the command itself) is checked before the probes
load, so a typo costs a second, not a capture.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from typing import Any, Callable, Iterator

from profiler.tax import baseline as baselines
from profiler.tax.analysis import analyse, to_result
from profiler.tax.calibrate import ensure_calibration, host_costs
from profiler.capture.run import CgroupHook, Target, run_captures, validate
from profiler.tax.cost import cpu_share_for_memory, price_table, validate_memory_mb
from profiler.errors import InputError
from profiler.files import check_writable_destination, write_json_atomic
from profiler.bpf.probes import ProbeOptions, check_environment
from profiler.capture.via_agent import AgentProbes, Unavailable, connect
from profiler.model import Capture
from profiler.output.capture_json import to_json
from profiler.output.report import render
from profiler.output.wire import DEFAULT_SOCKET
from profiler.timings import NO_TIMINGS, Timings


@dataclass(frozen=True)
class SessionSettings:
    command: tuple[str, ...] = ()
    pid: int | None = None
    duration_seconds: float | None = None
    repeat: int = 1
    warmup: int = 0
    memory_mb: int = 128
    prices: str = "x86_64"
    cpu_share: str = "none"  # "none" | "auto" | a fraction of one CPU
    baseline: str = baselines.BUILTIN
    json_path: str | None = None
    plot_path: str | None = None
    refresh_calibration: bool = False
    timings: Timings = NO_TIMINGS
    # A running agent's capture socket (None: --no-agent, always the cold path).
    agent_socket: str | None = DEFAULT_SOCKET


@dataclass(frozen=True)
class Outcome:
    data: dict[str, Any]
    table: str
    exit_code: int | None
    stop_signal: int | None


def parse_cpu_share(value: str, memory_mb: int) -> float | None:
    """None for no cgroup, else the fraction of one CPU to grant."""
    if value == "none":
        return None
    if value == "auto":
        return cpu_share_for_memory(memory_mb)
    try:
        share = float(value)
    except ValueError as err:
        raise InputError(f"--cpu-share must be auto, none or a fraction of a CPU, got {value!r}") from err
    if not 0.01 <= share <= (os.cpu_count() or 1):
        raise InputError(f"--cpu-share {share:g} is outside 0.01..{os.cpu_count() or 1} CPUs")
    return share


@contextlib.contextmanager
def _cgroup(share: float | None, memory_mb: int) -> Iterator[CgroupHook | None]:
    if share is None:
        yield None
        return
    from profiler.system.cgroup import FunctionCgroup

    with FunctionCgroup(memory_mb, share, name=f"profile-{os.getpid()}") as group:
        yield group


def _through_agent(settings: SessionSettings, options: ProbeOptions, progress: Callable[[str], None],
                   warn: Callable[[str], None]) -> AgentProbes | None:
    """A running agent to capture through, or None for the cold path (with one line why, when an agent
    socket is there but cannot serve)."""
    if not settings.agent_socket or os.geteuid() != 0:
        return None  # the agent serves root only: without root, the cold path says what is missing
    with settings.timings.phase("agent"):
        found = connect(settings.agent_socket, options)
    if isinstance(found, Unavailable):
        warn(f"warning: {found.reason}: loading probes here instead")
        return None
    if found is not None:
        progress(f"capturing through the agent at {found.path} (pid {found.agent_pid}); --no-agent loads "
                 "probes here")
    return found


def run_session(settings: SessionSettings, options: ProbeOptions,
                progress: Callable[[str], None], emit: Callable[[str], None] | None = None,
                warn: Callable[[str], None] | None = None) -> Outcome:
    """One session; `emit` gets the table as soon as it exists (before the probes detach);
    `warn` gets lines shown even when progress is quiet."""
    target = Target(command=settings.command, pid=settings.pid, duration_seconds=settings.duration_seconds)
    validate(target)
    validate_memory_mb(settings.memory_mb)
    prices = price_table(settings.prices)
    share = parse_cpu_share(settings.cpu_share, settings.memory_mb)
    if share is not None and settings.pid is not None:
        raise InputError("--cpu-share needs a command to start, not --pid")
    base = None if settings.baseline == baselines.BUILTIN else baselines.load(settings.baseline)
    for path in (settings.json_path, settings.plot_path):
        if path:
            check_writable_destination(path)
    if settings.plot_path:
        from profiler.output.plot import check_plot_path

        check_plot_path(settings.plot_path)

    agent = _through_agent(settings, options, progress, warn or progress)
    if agent is None:
        check_environment()
    calibration = ensure_calibration(refresh=settings.refresh_calibration, progress=progress)
    done: list[tuple[dict[str, Any], str]] = []

    def finish(captures: list[Capture]) -> None:
        """Analyse and put the result out while the probes are still attached:
        detaching uprobes waits on the kernel for seconds, the user need not."""
        analysis = analyse(captures, min(settings.warmup, max(0, len(captures) - 1)), host_costs(calibration),
                           prices, settings.memory_mb, base)
        result = to_result(analysis, share)
        data = to_json(result)
        if settings.json_path:
            write_json_atomic(settings.json_path, data)
            progress("capture written to " + ("standard output" if settings.json_path == "-"
                                              else settings.json_path))
        if settings.plot_path:
            from profiler.output.plot import plot_capture

            plot_capture(result, settings.plot_path)
            progress(f"plot written to {settings.plot_path}")
        table = render(result)
        if emit is not None:
            emit(table)
        done.append((data, table))

    with _cgroup(share, settings.memory_mb) as group:
        if share is not None:
            progress(f"cgroup: {share:.3f} CPU, {settings.memory_mb} MB")
        captures = run_captures(target, settings.warmup + settings.repeat, options, progress, group, share,
                                finish=finish, timings=settings.timings, agent=agent)
    data, table = done[0]
    last = captures[-1]
    return Outcome(data=data, table=table, exit_code=last.exit_code,
                   stop_signal=last.stop_signal)
