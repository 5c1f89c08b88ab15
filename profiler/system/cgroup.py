"""Run a command with the CPU share and memory limit a function of M MB gets.

Function platforms give CPU in proportion to memory; `--cpu-share auto`
measures a function with the fraction of a CPU it would really have. Works on
cgroup v2 (unified hierarchy with cpu and memory controllers) and v1 (the cpu
and memory hierarchies).
"""

from __future__ import annotations

import errno
import os
import signal
import time
from pathlib import Path

from profiler.errors import EnvironmentProblem
from profiler.system.procfs import ProcFS

ROOT = Path("/sys/fs/cgroup")
PERIOD_US = 100_000
MIN_QUOTA_US = 1_000


def detect(root: Path = ROOT) -> str:
    """'v2', 'v1' or 'none' for the controllers fntax needs (cpu, memory)."""
    available = ProcFS(cgroupfs=root).cgroup_controllers()
    if available is not None:
        return "v2" if {"cpu", "memory"} <= set(available) else "none"
    if (root / "cpu" / "cpu.cfs_quota_us").exists() and (root / "memory" / "memory.limit_in_bytes").exists():
        return "v1"
    return "none"


def _write(path: Path, value: str) -> None:
    try:
        path.write_text(value)
    except OSError as err:
        raise EnvironmentProblem(f"cannot write {value!r} to {path}: {err.strerror}") from err


class FunctionCgroup:
    """A fresh cgroup with a CPU quota and memory limit; removed on exit."""

    def __init__(self, memory_mb: int, cpu_share: float, name: str, root: Path = ROOT) -> None:
        self.memory_mb = memory_mb
        self.cpu_share = cpu_share
        self.name = name
        self.root = root
        self.version = detect(root)
        self.dirs: list[Path] = []

    @property
    def quota_us(self) -> int:
        return max(MIN_QUOTA_US, int(round(self.cpu_share * PERIOD_US)))

    def __enter__(self) -> FunctionCgroup:
        if self.version == "none":
            raise EnvironmentProblem(
                f"no cgroup cpu and memory controllers under {self.root}: --cpu-share needs cgroup v1 or v2")
        limit = str(self.memory_mb * 1024 * 1024)
        try:
            if self.version == "v2":
                parent = self.root / "fntax"
                parent.mkdir(exist_ok=True)
                _write(self.root / "cgroup.subtree_control", "+cpu +memory")
                _write(parent / "cgroup.subtree_control", "+cpu +memory")
                group = parent / self.name
                group.mkdir()
                self.dirs = [group]
                _write(group / "cpu.max", f"{self.quota_us} {PERIOD_US}")
                _write(group / "memory.max", limit)
            else:
                cpu = self.root / "cpu" / "fntax" / self.name
                mem = self.root / "memory" / "fntax" / self.name
                cpu.mkdir(parents=True)
                self.dirs.append(cpu)
                mem.mkdir(parents=True)
                self.dirs.append(mem)
                _write(cpu / "cpu.cfs_period_us", str(PERIOD_US))
                _write(cpu / "cpu.cfs_quota_us", str(self.quota_us))
                _write(mem / "memory.limit_in_bytes", limit)
        except BaseException:
            self._remove()
            raise
        return self

    def join(self, pid: int) -> None:
        """Move a process (held before exec) into every hierarchy of this group."""
        for group in self.dirs:
            _write(group / "cgroup.procs", str(pid))

    def throttled_ns(self) -> int:
        """Total time the group has been throttled at its quota (cpu.stat)."""
        if not self.dirs:
            return 0
        # dirs[0] is the v2 group or the v1 cpu hierarchy's: the one with cpu.stat.
        stat = ProcFS(cgroupfs=self.root).cgroup_cpu_stat(self.dirs[0])
        return stat.throttled_ns if stat is not None else 0

    def __exit__(self, *exc: object) -> None:
        self._remove()

    def _remove(self) -> None:
        for group in reversed(self.dirs):
            for _attempt in range(50):
                for pid in ProcFS(cgroupfs=self.root).cgroup_pids(group):
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
                try:
                    group.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError as err:
                    if err.errno != errno.EBUSY:
                        raise
                    time.sleep(0.02)
        self.dirs = []
