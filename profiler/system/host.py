"""Facts about the host: kernel, CPUs, headers, mounts. No bcc here."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from profiler.errors import EnvironmentProblem
from profiler.model import HostInfo
from profiler.system.procfs import DEFAULT, ProcFS

TRACEFS = Path("/sys/kernel/tracing")
DEBUGFS = Path("/sys/kernel/debug")
# Written by scripts/bootstrap.sh when it linked the closest distribution
# headers because the running kernel has no matching package.
HEADERS_FALLBACK_MARK = Path("/var/lib/fntax/headers-fallback")


def headers_state(release: str | None = None) -> str:
    """'matching', 'fallback' or 'missing' for the running kernel's headers."""
    release = release or os.uname().release
    build = Path(f"/lib/modules/{release}/build")
    if not build.exists():
        return "missing"
    if HEADERS_FALLBACK_MARK.exists():
        return "fallback"
    # Headers whose directory names another kernel release are a fallback,
    # whoever linked them.
    target = build.resolve().name
    if target.startswith("linux-headers-") and not target.endswith(release):
        return "fallback"
    return "matching"


def cpu_model(proc: ProcFS = DEFAULT) -> str:
    # arm64's /proc/cpuinfo has no "model name" line: "unknown" there.
    return proc.cpu_model() or "unknown"


def host_info() -> HostInfo:
    return HostInfo(kernel=os.uname().release, cpus=os.cpu_count() or 1,
                    headers=headers_state(), cpu_model=cpu_model())


def ensure_tracefs() -> None:
    """Mount tracefs (and debugfs) when missing: bcc reads tracepoint formats there."""
    if (TRACEFS / "events").is_dir():
        return
    for fstype, where in (("tracefs", TRACEFS), ("debugfs", DEBUGFS)):
        if where.exists() and not (fstype == "tracefs" and (where / "events").is_dir()):
            subprocess.run(["mount", "-t", fstype, fstype, str(where)],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
    if not (TRACEFS / "events").is_dir():
        raise EnvironmentProblem(f"tracefs is not mounted at {TRACEFS} and mounting it failed")


# Tracepoints probes/kvm.bpf.c attaches to (they exist only while the kvm
# module is loaded). Its KVM_RUN hook rides on the raw sys_enter / sys_exit.
KVM_TRACEPOINTS: tuple[str, ...] = ("kvm/kvm_exit", "kvm/kvm_entry", "kvm/kvm_userspace_exit", "kvm/kvm_pio",
                                    "kvm/kvm_mmio", "kvm/kvm_vcpu_wakeup")


def kvm_tracepoints_missing(tracefs: Path = TRACEFS) -> list[str]:
    """The kvm family's tracepoints this kernel lacks (all of kvm's when kvm is not loaded)."""
    return [name for name in KVM_TRACEPOINTS if not (tracefs / "events" / name).is_dir()]
