"""What the probes themselves cost: kernel BPF run-time statistics.

BPF_ENABLE_STATS turns the kernel's per-program run count and run time on for
as long as its fd lives (unlike the global sysctl, it reverts by itself when
fntax exits). The statistics add two clock reads to every program run, so
fntax keeps them on only while a short synthetic workload runs at load.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import json
import mmap
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from profiler.bpf import arch
from profiler.bpf.loader import ProbeOptions, module_source, probe_label
from profiler.errors import FntaxError
from profiler.files import write_json_atomic
from profiler.system import procfs

_BPF_ENABLE_STATS = 32
_BPF_STATS_RUN_TIME = 0


@dataclass(frozen=True)
class ProgramStats:
    """Kernel BPF run-time statistics of one loaded program (bpf_stats)."""

    runs: int
    run_ns: int

    @property
    def mean_ns(self) -> float:
        return self.run_ns / self.runs if self.runs else 0.0


def enable_stats() -> int | None:
    """An fd that keeps BPF run-time statistics on; None where the kernel refuses."""
    libc = ctypes.CDLL(None, use_errno=True)
    attr = (ctypes.c_uint32 * 32)()
    attr[0] = _BPF_STATS_RUN_TIME
    fd = int(libc.syscall(arch.current().nr_bpf, _BPF_ENABLE_STATS, ctypes.byref(attr), ctypes.sizeof(attr)))
    return fd if fd >= 0 else None


def _fdinfo_by_label(bpf: Any) -> dict[str, dict[str, str]]:
    """Each loaded program's fdinfo (the kernel's per-program statistics), by probe label."""
    return {probe_label(name.decode() if isinstance(name, bytes) else str(name)):
            procfs.DEFAULT.fdinfo(int(func.fd)) or {} for name, func in bpf.funcs.items()}


def program_misses(bpf: Any) -> dict[str, int]:
    """Runs of each loaded program the kernel skipped (fdinfo recursion_misses), by probe label."""
    return {label: int(info.get("recursion_misses", 0)) for label, info in _fdinfo_by_label(bpf).items()}


def program_stats(bpf: Any) -> dict[str, ProgramStats]:
    """Run count and run time of each loaded program, by probe label."""
    return {label: ProgramStats(runs=int(info.get("run_cnt", 0)), run_ns=int(info.get("run_time_ns", 0)))
            for label, info in _fdinfo_by_label(bpf).items()}


def run_synthetic_workload(track: Callable[[int], None]) -> None:
    """A short child that makes syscalls, takes page faults and sleeps, tracked
    (by `track`, under a workload id no capture reads) before it starts."""
    gate_read, gate_write = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(gate_write)
            if not os.read(gate_read, 1):
                os._exit(127)  # fntax died before releasing it: never run untracked
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
    track(pid)
    os.write(gate_write, b"g")
    os.close(gate_write)
    os.waitpid(pid, 0)


# -- kept across runs (`fntax profile`) ----------------------------------------
# The measurement takes a synthetic workload and the statistics' toggling at
# every start (0.07 s of a capture's time to result). Like the calibration, it
# is kept per host and kernel -- and per module text and flags, so a probe
# changed or a library upgraded measures again; `fntax calibrate --refresh`
# drops it.

def _cache_dir() -> Path:
    return Path(os.environ.get("FNTAX_HOME", "/var/lib/fntax")) / "cache"


def _cache_path(options: ProbeOptions) -> Path:
    key = "\n".join([module_source(options), *options.cflags(), os.uname().release, procfs.DEFAULT.cpu_model() or ""])
    return _cache_dir() / f"probe-cost-{hashlib.sha256(key.encode()).hexdigest()[:16]}.json"


def cached_means(options: ProbeOptions) -> dict[str, float] | None:
    """Mean run time per probe measured before for these very probes on this host, if any."""
    try:
        raw = json.loads(_cache_path(options).read_text())
        means = {str(k): float(v) for k, v in raw["probe_mean_ns"].items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    return means or None


def remember_means(options: ProbeOptions, means: dict[str, float]) -> None:
    if _cache_dir().is_dir():  # made by the calibration; a cache is never a reason to fail
        with contextlib.suppress(OSError, FntaxError):
            write_json_atomic(_cache_path(options), {"probe_mean_ns": means})


def forget_cached_means() -> None:
    for path in _cache_dir().glob("probe-cost-*.json"):
        with contextlib.suppress(OSError):
            path.unlink()
