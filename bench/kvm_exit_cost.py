"""The KVM probe's cost per VM exit: a guest's port writes per second with and without it.

    .venv/bin/python bench/kvm_exit_cost.py [--writes 50000] [--runs 5]

(as root, with /dev/kvm and qemu-system-x86_64). The guest (tests/guests,
-M microvm PVH ELF) makes N writes to port 0x80, each one a PIO exit that
reaches QEMU (a userspace exit) and a KVM_RUN to re-enter. Its write rate is
N / (wall(N writes) - wall(0 writes)): the same VM boot is subtracted, so
only the exits are timed. Side by side in one run: each round measures all
three conditions (no probe; the default build, which returns 0 and so hides
the kvm events from perf; the build that passes them on) back to back in a rotating order, by
attaching and detaching the already loaded probes; each figure is the median
over the rounds. "+us/exit" is the probe's added host time per guest write,
i.e. per PIO exit to QEMU (kvm_pio + kvm_userspace_exit + the KVM_RUN ioctl).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from profiler.system.guest_image import build_pvh_elf  # noqa: E402
from tests.guests.kvm_probe import KvmProbe  # noqa: E402
from profiler.system.guest_vm import run_vm, why_no_vm  # noqa: E402


def _wall(image: Path, expected: int) -> float:
    status, wall, err = run_vm(image, "kvm-exit-cost", "microvm", timeout=300)
    if status != expected:
        raise SystemExit(f"guest exited {status}, expected {expected}: {err.strip()}")
    return wall


def seconds_per_write(empty: Path, full: Path, writes: int, expected: int) -> float:
    """One pair: the same VM with N writes and with none; the difference per write."""
    base = _wall(empty, expected)
    loaded = _wall(full, expected)
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
    labels = ("without probe", "kvm.bpf.c (default)", "kvm.bpf.c -DFNTAX_KVM_PASS_TO_PERF=1")
    costs: dict[str, list[float]] = {label: [] for label in labels}
    with tempfile.TemporaryDirectory() as tmp:
        empty, full = Path(tmp) / "empty.elf", Path(tmp) / "full.elf"
        spec = build_pvh_elf(full, args.writes)
        build_pvh_elf(empty, 0)
        # Both builds loaded up front, then attached one at a time: every round
        # measures all three conditions back to back, in a rotating order.
        probes = {labels[1]: KvmProbe(), labels[2]: KvmProbe(cflags=("-DFNTAX_KVM_PASS_TO_PERF=1",))}
        try:
            for probe in probes.values():
                probe.detach()
            for round_no in range(args.runs):
                order = labels[round_no % 3:] + labels[:round_no % 3]
                for label in order:
                    probe = probes.get(label)
                    if probe:
                        probe.attach()
                    try:
                        costs[label].append(seconds_per_write(empty, full, args.writes, spec.exit_status))
                    finally:
                        if probe:
                            probe.detach()
            for label, probe in probes.items():
                counted = sum(f.pio_ports.get("post", 0) for f in probe.snapshot().values())
                if counted < args.writes * args.runs:
                    raise SystemExit(f"{label}: probe counted {counted} post-port writes, "
                                     f"expected at least {args.writes * args.runs}")
        finally:
            for probe in probes.values():
                probe.close()

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
