"""probes/kvm.bpf.c against real VMs whose port writes are known.

Each guest (tests/guests/build.py) makes exactly N one-byte writes to port
0x80 and leaves through isa-debug-exit. The sources of truth: N itself (the
guest's code, checked instruction by instruction in tests/unit/test_guests.py),
QEMU's exit status (the guest ran to its end), the wall time measured here,
and perf's own count of the kvm tracepoints for the same QEMU process.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from profiler.system.guest_image import build_boot_sector, build_pvh_elf  # noqa: E402
from tests.guests.kvm_probe import KvmFigures, KvmProbe  # noqa: E402
from profiler.system.guest_vm import qemu_command, start_vm, why_no_vm  # noqa: E402

pytestmark = [pytest.mark.kvm, pytest.mark.bpf]

_NO_VM = why_no_vm()
if _NO_VM:
    pytestmark.append(pytest.mark.skip(reason=_NO_VM))


def _load(*cflags: str) -> KvmProbe:
    try:
        return KvmProbe(cflags=cflags)
    except ImportError:
        pytest.skip("bcc is not importable (run make bootstrap)")


@pytest.fixture
def probe() -> Iterator[KvmProbe]:
    """The probe as built by default, loaded per test."""
    with _load() as loaded:
        yield loaded


def _figures(probe: KvmProbe, pid: int) -> KvmFigures:
    figures = probe.snapshot().get(pid)
    assert figures is not None, f"no KVM figures for QEMU pid {pid}"
    return figures


def _check_one_vm(fig: KvmFigures, writes: int, wall: float) -> None:
    # Every write reaches QEMU (port 0x80 has no in-kernel device): one PIO
    # exit and one userspace exit each, plus the firmware's and the exit write.
    assert fig.pio_ports.get("post", 0) == writes, fig.pio_ports
    assert fig.pio_out >= writes + 1
    assert fig.userspace_exits >= writes + 1
    assert fig.userspace_reasons["io"].count >= writes + 1
    # Time from each userspace exit to re-entry: positive, within the VM's life.
    assert 0 < fig.userspace_seconds < wall
    assert 0 < fig.userspace_reasons["io"].seconds <= fig.userspace_seconds
    # Every userspace exit but the last (QEMU exits there) was re-entered.
    closed = fig.reentries_by_run + fig.reentries_by_entry
    assert fig.userspace_exits - 1 <= closed <= fig.userspace_exits
    assert fig.kvm_runs >= closed
    if fig.exits:   # kvm_exit fires on this host: exit time is measured too
        assert fig.exits >= writes
        assert 0 < fig.exit_seconds < wall
        assert fig.exit_reasons["io_instruction"].count >= writes
    assert fig.exited


@pytest.mark.parametrize("kind, writes", [("microvm", 3000), ("bios", 500)])
def test_guest_writes_appear_as_pio_exits_of_its_qemu(probe: KvmProbe, tmp_path: Path, kind: str,
                                                      writes: int) -> None:
    image = tmp_path / "guest.img"
    spec = (build_pvh_elf if kind == "microvm" else build_boot_sector)(image, writes)
    started = time.monotonic()
    proc = start_vm(image, f"kvm-groundwork-{kind}", kind)
    _, err = proc.communicate(timeout=120)
    wall = time.monotonic() - started
    assert proc.returncode == spec.exit_status, err.decode(errors="replace")
    fig = _figures(probe, proc.pid)
    _check_one_vm(fig, writes, wall)
    assert fig.comm.startswith("qemu-system")
    assert probe.errors() == {"kvm_threads": 0, "kvm_procs": 0, "lost_delta": 0}


def test_two_vms_at_once_keep_their_own_figures(probe: KvmProbe, tmp_path: Path) -> None:
    # The spin loop between writes makes each VM live long enough to overlap.
    runs = []
    for i, writes in enumerate((2000, 5000)):
        image = tmp_path / f"guest{i}.elf"
        spec = build_pvh_elf(image, writes, spin=300)
        runs.append((writes, spec, time.monotonic(), start_vm(image, f"kvm-groundwork-pair-{i}", "microvm")))
    ends = []
    for writes, spec, started, proc in runs:
        _, err = proc.communicate(timeout=120)
        ends.append(time.monotonic())
        assert proc.returncode == spec.exit_status, err.decode(errors="replace")
    assert runs[1][2] < ends[0], "the two VMs did not run at the same time"
    for (writes, _, started, proc), end in zip(runs, ends):
        _check_one_vm(_figures(probe, proc.pid), writes, end - started)


def test_halts_are_kept_apart_from_exit_time(probe: KvmProbe, tmp_path: Path) -> None:
    image = tmp_path / "idle.img"
    spec = build_boot_sector(image, 100, halt_ticks=8)     # about 0.44 s halted, then 100 writes
    started = time.monotonic()
    proc = start_vm(image, "kvm-groundwork-idle", "bios")
    _, err = proc.communicate(timeout=120)
    wall = time.monotonic() - started
    assert proc.returncode == spec.exit_status, err.decode(errors="replace")
    fig = _figures(probe, proc.pid)
    assert fig.pio_ports.get("post") == 100
    assert fig.halts >= 5
    halted = fig.halt_wait_seconds + fig.halt_poll_seconds
    assert 0.2 < halted < wall
    # The halted time is idle: it is in neither userspace-exit time nor exit time.
    assert fig.userspace_seconds < halted
    assert fig.exit_seconds == 0 or fig.halt_exit_seconds > 0


@pytest.mark.skipif(shutil.which("perf") is None, reason="perf is not installed")
def test_counts_agree_with_perf(tmp_path: Path) -> None:
    """perf records the same tracepoints system-wide; its per-pid counts must match.

    Built with -DFNTAX_KVM_PASS_TO_PERF=1: a BPF program returning 0 on a
    tracepoint (the default build) hides it from perf.
    Per-task perf counting of kvm tracepoints reads 0 on this host, so perf
    records with -a and the events are split by pid here."""
    with _load("-DFNTAX_KVM_PASS_TO_PERF=1") as probe:
        _check_against_perf(probe, tmp_path)


def _check_against_perf(probe: KvmProbe, tmp_path: Path) -> None:
    image = tmp_path / "guest.elf"
    spec = build_pvh_elf(image, 1500)
    data = tmp_path / "perf.data"
    command = qemu_command(image, "kvm-groundwork-perf", "microvm")
    result = subprocess.run(["perf", "record", "-q", "-a", "-o", str(data), "-e",
                             "kvm:kvm_pio,kvm:kvm_userspace_exit,kvm:kvm_mmio", "--", *command],
                            capture_output=True, timeout=120)
    assert result.returncode == spec.exit_status, result.stderr.decode(errors="replace")
    scripted = subprocess.run(["perf", "script", "-i", str(data), "-F", "comm,pid,event"],
                              capture_output=True, text=True, timeout=120)
    script = scripted.stdout
    assert script, f"perf script printed nothing: {scripted.returncode} {scripted.stderr[-500:]}"
    counts: dict[int, dict[str, int]] = {}
    for line in script.splitlines():
        parts = line.split()
        if len(parts) >= 3 and parts[0].startswith("qemu-system") and parts[-1].startswith("kvm:"):
            per_pid = counts.setdefault(int(parts[-2]), {})
            event = parts[-1].rstrip(":")
            per_pid[event] = per_pid.get(event, 0) + 1
    snapshot = probe.snapshot()
    ours = {pid: c for pid, c in counts.items() if c.get("kvm:kvm_pio", 0) >= 1501 and pid in snapshot}
    assert ours, f"perf saw no QEMU with the guest's writes: {counts}"
    for pid, perf_counts in ours.items():
        fig = snapshot[pid]
        assert fig.pio == perf_counts["kvm:kvm_pio"]
        assert fig.userspace_exits == perf_counts["kvm:kvm_userspace_exit"]
        assert fig.mmio + fig.mmio_unsatisfied == perf_counts.get("kvm:kvm_mmio", 0)


def test_a_live_qemu_is_named_by_its_name_option(tmp_path: Path) -> None:
    """vm_naming on the real /proc of a running QEMU (the fixtures' shapes, checked live)."""
    from profiler.attribution.vm import IdSource, Monitor, identify_vm, read_process_facts

    image = tmp_path / "long.elf"
    spec = build_pvh_elf(image, 100, spin=20_000)
    proc = start_vm(image, "fn-live-7", "microvm", extra=["-smp", "2"])
    try:
        time.sleep(0.3)
        vm = identify_vm(read_process_facts(Path("/proc"), proc.pid))
    finally:
        _, err = proc.communicate(timeout=120)
    assert proc.returncode == spec.exit_status, err.decode(errors="replace")
    assert vm is not None
    assert (vm.monitor, vm.vm_id, vm.id_source, vm.machine) == (Monitor.QEMU, "fn-live-7", IdSource.QEMU_NAME, "microvm")
