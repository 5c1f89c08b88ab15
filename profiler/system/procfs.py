"""The one reader of /proc and cgroupfs, with injectable roots.

Every figure fntax takes from /proc or /sys/fs/cgroup goes through `ProcFS`, so
tests point it at a fixture tree (``tests/fixtures/procfs``) the way
prometheus_client's ``ProcessCollector(proc=...)`` and Kepler's procfs reader
do, and no other module knows a /proc file format.

Errors: a process can vanish between any two reads, and a process caught
mid-exit answers ENOENT, ESRCH or EACCES depending on the file and the moment.
Callers can do nothing about the difference, so every per-process method
returns ``None`` when the process is gone or unreadable; the translation
happens at one point, `_read`. A file that reads but does not parse is treated
the same way (the kernel's formats are fixed, so it is a file from something
that is no longer the live process). Host-wide readers (`cpu_model`,
`cgroup_cpu_stat`) also return ``None`` when their file is absent.
The one exception to ``None``: `environ` of a live process owned by another
user without the privilege to read it is an empty mapping, because the
process is there and the rest of its facts are still worth having.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

PROC = Path("/proc")
CGROUPFS = Path("/sys/fs/cgroup")
# memory.limit_in_bytes on cgroup v1 says "no limit" as a huge page-aligned
# number (PAGE_COUNTER_MAX * page size), not as "max": anything this large is
# no limit.
_NO_LIMIT_BYTES = 1 << 50
_MIB = 1024 * 1024


@dataclass(frozen=True)
class ProcStat:
    """Fields of /proc/PID/stat that fntax uses."""

    pid: int
    comm: str
    state: str
    ppid: int
    utime_ticks: int  # field 14, clock ticks in user mode
    stime_ticks: int  # field 15, clock ticks in kernel mode
    start_time: int  # field 22, clock ticks since boot: with the pid, a process's identity


@dataclass(frozen=True)
class CgroupEntry:
    """One line of /proc/PID/cgroup: ``hierarchy-ID:controller-list:path``."""

    hierarchy: int
    controllers: tuple[str, ...]  # empty on the cgroup v2 line ("0::/path")
    path: str

    @property
    def unified(self) -> bool:
        return self.hierarchy == 0 and not self.controllers


@dataclass(frozen=True)
class ThreadInfo:
    tid: int
    comm: str


@dataclass(frozen=True)
class SchedStat:
    """/proc/PID/schedstat: the scheduler's own accounting of a task."""

    sum_exec_runtime_ns: int  # on-CPU time
    run_delay_ns: int  # time runnable but waiting for a CPU
    timeslices: int


@dataclass(frozen=True)
class CgroupCpuStat:
    """A cgroup's cpu.stat, in nanoseconds whatever the cgroup version."""

    nr_periods: int
    nr_throttled: int
    throttled_ns: int
    usage_ns: int | None  # v2 usage_usec, v1 cpuacct.usage; None when not exposed


class ProcFS:
    """Reads /proc (``root``) and cgroupfs (``cgroupfs``); both injectable for tests."""

    def __init__(self, root: Path = PROC, cgroupfs: Path = CGROUPFS) -> None:
        self.root = Path(root)
        self.cgroupfs = Path(cgroupfs)

    # -- the one translation point -------------------------------------------------

    @staticmethod
    def _read(path: Path) -> bytes | None:
        try:
            return path.read_bytes()
        except OSError:  # gone (ENOENT, ESRCH), hidden (EACCES, hidepid) or not a process (ENOTDIR)
            return None

    def _text(self, path: Path) -> str | None:
        data = self._read(path)
        return None if data is None else data.decode(errors="replace")

    def _pid_dir(self, pid: int | str) -> Path:
        return self.root / str(pid)

    # -- per process -------------------------------------------------------------------

    def stat(self, pid: int | str) -> ProcStat | None:
        text = self._text(self._pid_dir(pid) / "stat")
        if text is None:
            return None
        try:
            # comm may hold spaces and parentheses: it runs from the first "("
            # to the last ")".
            comm = text[text.index("(") + 1: text.rindex(")")]
            fields = text[text.rindex(")") + 2:].split()  # fields[0] is field 3 (state)
            return ProcStat(pid=int(text.split(maxsplit=1)[0]), comm=comm, state=fields[0], ppid=int(fields[1]),
                            utime_ticks=int(fields[11]), stime_ticks=int(fields[12]), start_time=int(fields[19]))
        except (ValueError, IndexError):
            return None

    def tgid(self, pid: int | str) -> int | None:
        """The process a task belongs to (status Tgid): a thread's tgid is not its tid."""
        text = self._text(self._pid_dir(pid) / "status")
        if text is None:
            return None
        for line in text.splitlines():
            if line.startswith("Tgid:"):
                try:
                    return int(line.split()[1])
                except (ValueError, IndexError):
                    return None
        return None

    def comm(self, pid: int | str) -> str | None:
        """/proc/PID/comm (the task's name, up to 15 bytes)."""
        text = self._text(self._pid_dir(pid) / "comm")
        return None if text is None else text.rstrip("\n")

    def argv(self, pid: int | str) -> list[str] | None:
        """The command line as its arguments; [] for kernel threads (and zombies)."""
        data = self._read(self._pid_dir(pid) / "cmdline")
        if data is None:
            return None
        if data.endswith(b"\0"):
            data = data[:-1]
        return [arg.decode(errors="replace") for arg in data.split(b"\0")] if data else []

    def cmdline(self, pid: int | str) -> str | None:
        """The command line joined by spaces, as ps prints it; "" for kernel threads."""
        data = self._read(self._pid_dir(pid) / "cmdline")
        if data is None:
            return None
        # A process that rewrote its argv (setproctitle) may leave NULs or a
        # space-joined title: both read the same way once joined.
        return data.replace(b"\0", b" ").decode(errors="replace").strip()

    def environ(self, pid: int | str) -> dict[str, str] | None:
        """The environment the process was started with; {} when we may not read it."""
        path = self._pid_dir(pid) / "environ"
        try:
            data = path.read_bytes()
        except PermissionError:
            # Another user's process without CAP_SYS_PTRACE: it exists, its
            # environment is private. (A vanished process answers ENOENT/ESRCH.)
            return {} if self._pid_dir(pid).is_dir() else None
        except OSError:
            return None
        environ: dict[str, str] = {}
        for item in data.split(b"\0"):
            name, sep, value = item.decode(errors="replace").partition("=")
            if sep and name:
                environ[name] = value
        return environ

    def cgroups(self, pid: int | str) -> list[CgroupEntry] | None:
        """Every hierarchy's line of /proc/PID/cgroup (one on v2, one per hierarchy on v1)."""
        text = self._text(self._pid_dir(pid) / "cgroup")
        if text is None:
            return None
        entries = []
        for line in text.splitlines():
            parts = line.split(":", 2)
            if len(parts) != 3:
                continue
            try:
                hierarchy = int(parts[0])
            except ValueError:
                continue
            controllers = tuple(name for name in parts[1].split(",") if name)
            entries.append(CgroupEntry(hierarchy, controllers, parts[2]))
        return entries

    def threads(self, pid: int | str) -> list[ThreadInfo] | None:
        """The process's threads (task/), with their own comm; tids sorted."""
        task = self._pid_dir(pid) / "task"
        try:
            names = os.listdir(task)
        except OSError:
            return None
        threads = []
        for name in sorted((n for n in names if n.isdigit()), key=int):
            comm = self._text(task / name / "comm")
            if comm is not None:  # a thread that exited between listdir and read is skipped
                threads.append(ThreadInfo(int(name), comm.rstrip("\n")))
        return threads

    def schedstat(self, pid: int | str) -> SchedStat | None:
        text = self._text(self._pid_dir(pid) / "schedstat")
        if text is None:
            return None
        try:
            oncpu, runqueue, slices = (int(value) for value in text.split()[:3])
        except ValueError:
            return None
        return SchedStat(sum_exec_runtime_ns=oncpu, run_delay_ns=runqueue, timeslices=slices)

    def rss_bytes(self, pid: int | str = "self") -> int | None:
        """Resident set size from statm (field 2, in pages)."""
        text = self._text(self._pid_dir(pid) / "statm")
        if text is None:
            return None
        try:
            return int(text.split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, IndexError):
            return None

    def fdinfo(self, fd: int, pid: int | str = "self") -> dict[str, str] | None:
        """/proc/PID/fdinfo/FD as key: value (bpf program fds list run_time_ns, run_cnt)."""
        text = self._text(self._pid_dir(pid) / "fdinfo" / str(fd))
        if text is None:
            return None
        info = {}
        for line in text.splitlines():
            key, sep, value = line.partition(":")
            if sep:
                info[key.strip()] = value.strip()
        return info

    def memory_limit_mb(self, pid: int | str) -> int | None:
        """The memory limit of the process's cgroup in MB (v2 memory.max, v1
        memory.limit_in_bytes); None when unlimited, unknown or gone."""
        entries = self.cgroups(pid)
        if entries is None:
            return None
        for entry in entries:
            candidates = []
            if entry.unified:
                candidates.append(self.cgroup_dir(entry.path) / "memory.max")
            if "memory" in entry.controllers:
                candidates.append(self.cgroup_dir(entry.path, "memory") / "memory.limit_in_bytes")
            for candidate in candidates:
                value = self._text(candidate)
                if value is None:
                    continue
                value = value.strip()  # "max" on v2 means no limit
                if value.isdigit() and int(value) < _NO_LIMIT_BYTES:
                    return max(1, int(value) // _MIB)
        return None

    # -- host-wide -------------------------------------------------------------------

    def cpu_model(self) -> str | None:
        text = self._text(self.root / "cpuinfo")
        if text is None:
            return None
        for line in text.splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
        return None

    def cgroup_dir(self, path: str, hierarchy: str | None = None) -> Path:
        """The directory of a cgroup named as /proc/PID/cgroup names it; `hierarchy`
        is the v1 mount (e.g. "memory"), None for the v2 unified tree."""
        base = self.cgroupfs / hierarchy if hierarchy else self.cgroupfs
        return base / path.lstrip("/")

    def cgroup_controllers(self) -> list[str] | None:
        """The controllers of the v2 unified root (cgroup.controllers); None on v1-only hosts."""
        text = self._text(self.cgroupfs / "cgroup.controllers")
        return None if text is None else text.split()

    def cgroup_pids(self, group: Path) -> list[int]:
        """The processes in a cgroup directory (cgroup.procs); [] once it is gone."""
        text = self._text(group / "cgroup.procs")
        return [int(pid) for pid in text.split() if pid.isdigit()] if text is not None else []

    def cgroup_cpu_stat(self, group: Path) -> CgroupCpuStat | None:
        """cpu.stat of a cgroup directory (v2, or v1's cpu hierarchy with
        cpuacct.usage beside it when cpu and cpuacct are mounted together)."""
        text = self._text(group / "cpu.stat")
        if text is None:
            return None
        fields: dict[str, int] = {}
        for line in text.splitlines():
            parts = line.split()
            if len(parts) == 2 and parts[1].isdigit():
                fields[parts[0]] = int(parts[1])
        if "throttled_usec" in fields or "usage_usec" in fields:  # v2 reports microseconds
            return CgroupCpuStat(nr_periods=fields.get("nr_periods", 0), nr_throttled=fields.get("nr_throttled", 0),
                                 throttled_ns=fields.get("throttled_usec", 0) * 1000,
                                 usage_ns=fields["usage_usec"] * 1000 if "usage_usec" in fields else None)
        usage = self._text(group / "cpuacct.usage")  # v1: nanoseconds, in the cpuacct controller
        return CgroupCpuStat(nr_periods=fields.get("nr_periods", 0), nr_throttled=fields.get("nr_throttled", 0),
                             throttled_ns=fields.get("throttled_time", 0),
                             usage_ns=int(usage.strip()) if usage is not None and usage.strip().isdigit() else None)


DEFAULT = ProcFS()
