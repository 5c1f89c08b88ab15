"""The KVM probe's cost per VM exit: a guest's port writes per second with and without it.

    .venv/bin/python bench/kvm_exit_cost.py [--writes 50000] [--runs 5]

(as root, with /dev/kvm and qemu-system-x86_64). The guest (tests/guests,
-M microvm PVH ELF) makes N writes to port 0x80, each one a PIO exit that
reaches QEMU (a userspace exit) and a KVM_RUN to re-enter. Its write rate is
N / (wall(N writes) - wall(0 writes)): the same VM boot is subtracted, so
only the exits are timed. Side by side in one run: each round measures all
three conditions (no probe; the default build, which returns 0 and so hides
the kvm events from perf; the build that passes them on) back to back in a rotating order, by
loading the whole fntax module (every family) and tracking the VM; each figure is the median
over the rounds. "+us/exit" is the probe's added host time per guest write,
i.e. per PIO exit to QEMU (kvm_pio + kvm_userspace_exit + the KVM_RUN ioctl).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from profiler.system.guest_image import build_pvh_elf  # noqa: E402
from profiler.bpf.probes import KernelProbes, ProbeOptions  # noqa: E402
from profiler.figures import KVM_PIO_OUT  # noqa: E402
from profiler.system.guest_vm import start_vm, stop_vm, why_no_vm  # noqa: E402


def _wall(image: Path, expected: int, probes: KernelProbes | None) -> float:
    started = time.monotonic()
    vm = start_vm(image, "kvm-exit-cost", "microvm")
    try:
        if probes is not None:
            probes.track(vm.pid, workload=1, tree=True)  # the VM as fntax follows it: a tracked workload
        _, err = vm.communicate(timeout=300)
    finally:
        stop_vm(vm)
    if vm.returncode != expected:
        raise SystemExit(f"guest exited {vm.returncode}, expected {expected}: {(err or b'').decode().strip()}")
    return time.monotonic() - started


def seconds_per_write(empty: Path, full: Path, writes: int, expected: int,
                      probes: KernelProbes | None = None) -> float:
    """One pair: the same VM with N writes and with none; the difference per write."""
    base = _wall(empty, expected, probes)
    loaded = _wall(full, expected, probes)
    return max(loaded - base, 1e-9) / writes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--writes", type=int, default=50000)
    parser.add_argument("--runs", type=int, default=9)
    args = parser.parse_args(argv)
    reason = why_no_vm()
    if reason:
        print(f"kvm_exit_cost: skipped: {reason}", file=sys.stderr)
        return 0
    labels = ("without fntax", "fntax (default)", "fntax, kvm_pass_to_perf")
    options = {labels[1]: ProbeOptions(measure_probe_costs=False),
               labels[2]: ProbeOptions(measure_probe_costs=False, kvm_pass_to_perf=True)}
    costs: dict[str, list[float]] = {label: [] for label in labels}
    counted = {label: 0 for label in labels[1:]}
    with tempfile.TemporaryDirectory() as tmp:
        empty, full = Path(tmp) / "empty.elf", Path(tmp) / "full.elf"
        spec = build_pvh_elf(full, args.writes)
        build_pvh_elf(empty, 0)
        # Every round measures all three conditions back to back, in a
        # rotating order; the whole module (every family) is loaded for the
        # fntax conditions, as `fntax profile` loads it, and the VM tracked.
        for round_no in range(args.runs):
            order = labels[round_no % 3:] + labels[:round_no % 3]
            for label in order:
                if label not in options:
                    costs[label].append(seconds_per_write(empty, full, args.writes, spec.exit_status))
                    continue
                with KernelProbes(options[label]) as probes:
                    costs[label].append(seconds_per_write(empty, full, args.writes, spec.exit_status, probes))
                    counted[label] += sum(p.counters[KVM_PIO_OUT] for p in probes.snapshot().processes)
        for label, pio in counted.items():
            if pio < args.writes * args.runs:
                raise SystemExit(f"{label}: probe counted {pio} port writes, "
                                 f"expected at least {args.writes * args.runs}")

    base_cost = statistics.median(costs[labels[0]])
    print(f"guest port writes per second (-M microvm PVH guest, {args.writes} writes to port 0x80, "
          f"median of {args.runs} interleaved rounds)")
    print(f"{'':40} {'writes/s':>10} {'us/write':>9} {'ratio':>6} {'+us/exit':>9} {'spread us':>10}")
    for label in labels:
        cost = statistics.median(costs[label])
        spread = (max(costs[label]) - min(costs[label])) * 1e6
        print(f"{label:40} {1 / cost:>10.0f} {cost * 1e6:>9.2f} {base_cost / cost:>6.3f} "
              f"{(cost - base_cost) * 1e6:>+9.2f} {spread:>10.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
