"""`fntax doctor`'s KVM trial: boot a tiny guest for a moment under the kvm family.

What the kvm tracepoints show depends on the host (on nested or PVM hosts
kvm_exit/kvm_entry never fire), so doctor finds out by trial: a -M microvm
PVH guest (profiler/system/guest_image.py) makes a known number of port
writes and leaves; the probe's figures for that QEMU say which figures this
host can measure (profiler.tax.virtualization.visibility reads them).
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from profiler.bpf.probes import KernelProbes, ProbeOptions
from profiler.model import Counters, KvmCalls
from profiler.system.guest_image import build_pvh_elf
from profiler.system.guest_vm import start_vm, stop_vm, why_no_vm

TRIAL_WRITES = 200
TRIAL_WORKLOAD = 0xFFFE


@dataclass(frozen=True)
class KvmTrial:
    """What one tiny guest showed: the VM's counters and tables, or why there was no trial."""

    ran: bool
    detail: str
    writes: int = 0
    counters: Counters = Counters()
    kvm: KvmCalls = KvmCalls()


def run_trial(writes: int = TRIAL_WRITES, timeout: float = 30.0) -> KvmTrial:
    reason = why_no_vm()
    if reason:
        return KvmTrial(False, reason)
    options = ProbeOptions(families=("sched", "kvm"), measure_probe_costs=False, timeline=False)
    with tempfile.TemporaryDirectory() as tmp, KernelProbes(options) as probes:
        image = Path(tmp) / "trial.elf"
        spec = build_pvh_elf(image, writes)
        started = time.monotonic()
        vm = start_vm(image, "fntax-doctor-trial", "microvm")
        try:
            probes.track(vm.pid, TRIAL_WORKLOAD, tree=True)
            vm.wait(timeout)
        finally:
            stop_vm(vm)
        if vm.returncode != spec.exit_status:
            return KvmTrial(False, f"the trial guest did not run to its end (QEMU exit {vm.returncode})")
        sample = next((p for p in probes.snapshot().processes if p.pid == vm.pid), None)
        wall = time.monotonic() - started
        if sample is None:
            return KvmTrial(False, "the probe saw nothing of the trial guest")
        return KvmTrial(True, f"a {writes}-write microvm guest ran for {wall:.2f} s", writes, sample.counters,
                        sample.kvm)
