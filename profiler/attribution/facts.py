"""What attribution may know about a process, read once from /proc when it appears."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

from profiler.system.procfs import DEFAULT, ProcFS


@dataclass(frozen=True)
class ProcessFacts:
    """What attribution may look at, read once when the process appears."""

    pid: int
    start_time: int  # clock ticks since boot (/proc/PID/stat field 22)
    tgid: int  # the process this task belongs to (a thread's tgid is not its pid)
    comm: str
    cmdline: str
    cgroup: str  # the process's cgroup path in each hierarchy, one per line
    environ: Mapping[str, str]
    argv: tuple[str, ...] = ()  # the command line's arguments (VM naming reads options)


def read_facts(pid: int, proc: ProcFS = DEFAULT) -> ProcessFacts | None:
    """Facts of a live process, or None once it is gone (see ProcFS on errors)."""
    stat = proc.stat(pid)
    if stat is None:
        return None
    cmdline = proc.cmdline(pid)
    argv = proc.argv(pid) or []
    cgroups = proc.cgroups(pid)
    environ = proc.environ(pid)
    if cmdline is None or cgroups is None or environ is None:
        return None  # it exited while we read it
    # A task without a readable Tgid line is its own process, as before.
    tgid = proc.tgid(pid) or pid
    # Every hierarchy's path, one per line: a rule's pattern may match any
    # (cgroup v1 hosts list one line per controller).
    cgroup = "\n".join(entry.path for entry in cgroups)
    return ProcessFacts(pid=pid, start_time=stat.start_time, tgid=tgid, comm=stat.comm, cmdline=cmdline,
                        cgroup=cgroup, environ=environ, argv=tuple(argv))
