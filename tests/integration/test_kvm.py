"""The kvm family in the one module, against real VMs whose port writes are known.

Each guest (profiler/system/guest_image.py) makes exactly N one-byte writes
to port 0x80 and leaves through isa-debug-exit. Sources of truth: N (the
guest's code, checked instruction by instruction in tests/unit/test_guests.py),
QEMU's exit status, the wall time measured here, and the VM's id given on
its command line (-name).
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Callable, Iterator

import pytest

from profiler.attribution.rules import HOST, WorkloadKind, parse_rules
from profiler.figures import (
    KVM_EXITS,
    KVM_GUEST_TIME,
    KVM_PIO_OUT,
    KVM_USERSPACE_EXITS,
    KVM_USERSPACE_TIME,
    ONCPU,
)
from profiler.ledger.functions import Aggregator
from profiler.model import ProcessSample
from profiler.output.exposition import render_functions
from profiler.system.guest_image import build_pvh_elf
from profiler.system.guest_vm import start_vm, stop_vm, why_no_vm
from profiler.tax.compute import HostCosts, compute_tax
from profiler.tax.function_tax import TaxedFunction
from profiler.tax.virtualization import Visibility, virtualization_seconds, visibility
from profiler.model import summarise  # noqa: E402

pytestmark = [pytest.mark.kvm, pytest.mark.bpf]
_COSTS = HostCosts(page_fault_minor=0.0, context_switch=0.0, syscall=0.0, function_call=0.0)
_NO_VM = why_no_vm()
if _NO_VM:
    pytestmark.append(pytest.mark.skip(reason=_NO_VM))


@pytest.fixture(scope="module")
def probes() -> Iterator[object]:
    if os.geteuid() != 0:
        pytest.skip("needs root to load eBPF probes")
    from profiler.bpf.probes import KernelProbes, ProbeOptions
    try:
        with KernelProbes(ProbeOptions(measure_probe_costs=False)) as loaded:
            yield loaded
    except ImportError:
        pytest.skip("bcc is not importable (run make bootstrap)")


def _run(probes: object, tmp: Path, vms: list[tuple[str, int]],
         on_start: Callable[[int], None] | None = None) -> dict[str, tuple[ProcessSample, float, int]]:
    """Boot the VMs at once, each tracked as its own workload; their samples, wall times and pids."""
    started = {}
    for i, (name, writes) in enumerate(vms):
        image = tmp / f"{name}.elf"
        spec = build_pvh_elf(image, writes, spin=2000)
        vm = start_vm(image, name, "microvm")
        probes.track(vm.pid, workload=100 + i, tree=True)  # type: ignore[attr-defined]
        if on_start is not None:
            on_start(vm.pid)  # while /proc still shows it (the agent decides at fork/exec)
        started[name] = (vm, spec, time.monotonic())
    walls = {}
    for name, (vm, spec, t0) in started.items():
        try:
            vm.wait(120)
        finally:
            stop_vm(vm)
        walls[name] = time.monotonic() - t0
        assert vm.returncode == spec.exit_status, f"{name}: the guest did not run to its end"
    snap = probes.snapshot()  # type: ignore[attr-defined]
    by_pid = {p.pid: p for p in snap.processes}
    out = {}
    for name, (vm, _spec, _t0) in started.items():
        assert vm.pid in by_pid, f"no figures for {name} (pid {vm.pid})"
        out[name] = (by_pid[vm.pid], walls[name], vm.pid)
    return out


def test_writes_appear_as_io_exits_per_vm_with_their_time(probes: object, tmp_path: Path) -> None:
    vms = [("fn-alpha", 400), ("fn-beta", 900)]
    seen = _run(probes, tmp_path, vms)
    for name, writes in vms:
        sample, wall, _pid = seen[name]
        c = sample.counters
        print(name, {f.field: c[f] for f in (KVM_EXITS, KVM_USERSPACE_EXITS, KVM_PIO_OUT)},
              dict(sample.kvm.pio_by_port), dict(sample.kvm.userspace_exits_by_reason))
        # Two VMs at once keep their own figures: each exactly its own writes.
        assert sample.kvm.pio_by_port["post"].count == writes
        assert c[KVM_PIO_OUT] >= writes + 1
        assert sample.kvm.userspace_exits_by_reason["io"].count >= writes + 1
        assert c[KVM_USERSPACE_EXITS] >= writes + 1
        # Exit time positive and below the VM's wall time; guest time too.
        assert 0 < c[KVM_USERSPACE_TIME] / 1e9 < wall
        assert 0 < c[KVM_GUEST_TIME] <= c[ONCPU] * 1.05
        seen_here = visibility(c)
        assert seen_here.states["pio"] is Visibility.MEASURED
        if c[KVM_EXITS] == 0:  # nested/PVM host: kvm_exit silent, said so
            assert seen_here.states["exits"] is Visibility.UNAVAILABLE
            assert seen_here.partial
        assert virtualization_seconds(c) > 0
        tax = compute_tax(summarise([sample], int(wall * 1e9)), _COSTS)
        assert tax.by_category["virtualization"] == pytest.approx(virtualization_seconds(c))
        # The guest's time inside KVM_RUN is not syscall tax.
        assert tax.by_category["syscalls"] < c[KVM_GUEST_TIME] / 1e9
    assert seen["fn-alpha"][0].kvm.pio_by_port["post"].count != seen["fn-beta"][0].kvm.pio_by_port["post"].count




def test_vm_attributed_by_its_id_through_a_rule_never_host(probes: object, tmp_path: Path) -> None:
    rules = parse_rules({"rules": [{"vm_id": r"^fn-(?P<function>[a-z]+)$"}, {"vm_monitor": True}]}, "test")
    agg = Aggregator(rules)
    def seed(pid: int) -> None:
        # As the agent's exec event would: decide once QEMU's own argv is in /proc.
        deadline = time.monotonic() + 5
        while b"-name" not in Path(f"/proc/{pid}/cmdline").read_bytes() and time.monotonic() < deadline:
            time.sleep(0.001)
        agg.seed([(pid, None)])

    seen = _run(probes, tmp_path, [("fn-gamma", 300)], on_start=seed)
    sample, _wall, _pid = seen["fn-gamma"]
    from profiler.model import KernelSnapshot
    agg.update(KernelSnapshot(processes=(sample,), map_update_failures={}, taken_at_ns=0))
    views = {v.function: v for v in agg.view()}
    assert "gamma" in views and views["gamma"].kind is WorkloadKind.VM
    assert views["gamma"].kvm.pio_by_port["post"].count == 300
    assert HOST not in views or views[HOST].kvm.pio_by_port.get("post") is None
    text = render_functions([TaxedFunction(v, {}, 0.0) for v in views.values()]).decode()
    io = [line for line in text.splitlines()
          if line.startswith("fntax_kvm_userspace_exits_total{") and 'reason="io"' in line]
    assert io and all('function="gamma",kind="vm"' in line for line in io)
    assert float(io[0].rsplit(" ", 1)[1]) >= 301
    assert 'fntax_kvm_figure_measured{function="gamma",kind="vm",figure="pio"} 1.0' in text


def test_a_live_qemu_is_named_by_its_name_option(tmp_path: Path) -> None:
    """VM naming on the real /proc of a running QEMU (the fixtures' shapes, checked live)."""
    from profiler.attribution.vm import IdSource, Monitor, identify_vm, read_vm_facts

    image = tmp_path / "long.elf"
    spec = build_pvh_elf(image, 100, spin=20_000)
    proc = start_vm(image, "fn-live-7", "microvm", extra=["-smp", "2"])
    try:
        time.sleep(0.3)
        facts = read_vm_facts(proc.pid)
        vm = identify_vm(facts) if facts is not None else None
    finally:
        _, err = proc.communicate(timeout=120)
    assert proc.returncode == spec.exit_status, (err or b"").decode(errors="replace")
    assert vm is not None
    assert (vm.monitor, vm.vm_id, vm.id_source, vm.machine) == (Monitor.QEMU, "fn-live-7", IdSource.QEMU_NAME, "microvm")


def test_doctor_states_what_the_host_can_measure() -> None:
    """`fntax doctor` boots a tiny guest and says, per KVM figure, measured / partial / unavailable."""
    import json
    import subprocess

    from conftest import FNTAX  # type: ignore[import-not-found]

    result = subprocess.run([FNTAX, "doctor", "--json"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["checks"]["kvm trial"]["ok"], report["checks"]["kvm trial"]
    figures = report["figures"]
    assert figures["port I/O exits by bucket"]["status"] == "measured"
    assert figures["KVM exits to the VM monitor"]["status"] == "measured"
    # Independent source: does the kernel's kvm_exit fire here? perf counts it host-wide around a guest.
    exits = figures["KVM exits by reason"]["status"]
    virt = figures["virtualization tax"]["status"]
    assert (exits, virt) in {("measured", "measured"), ("unavailable", "partial")}
    if exits == "unavailable":
        assert not Path("/sys/module/kvm_intel").exists() and not Path("/sys/module/kvm_amd").exists()
