"""Observer cost per syscall, measured side by side in one run (`make bench`).

A syscall-heavy loop (`dd if=/dev/zero of=/dev/null bs=1 count=N`: one read
and one write per byte) runs under each configuration, interleaved round by
round so machine noise hits all of them alike:

  none          no probes
  floor         an empty raw tracepoint pair on sys_enter/sys_exit that reads
                the clock into a per-CPU array: the least any syscall timer costs
  syscount -L   bcc's syscount with latency (a separate process)
  naive hash    a per-syscall hash update keyed by tid (the obvious design)
  fntax         all fntax probes, dd tracked (the path a profiled function takes),
                as `fntax profile` runs them
  fntax+stats   the same with kernel BPF run-time statistics left on throughout
  fntax idle    all fntax probes, dd not tracked (every other process on the host)
  fntax agent   the agent's probes: every process tracked, process events on

Added cost per syscall = (median time - median time with no probes) / syscalls.
Goals (issue 2): fntax <= 1.25x floor, fntax <= 0.5x syscount -L.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from profiler.capture.run import _GatedChild  # noqa: E402
from profiler.system.host import cpu_model, ensure_tracefs  # noqa: E402
from profiler.bpf.loader import FAMILIES, compile_text  # noqa: E402
from profiler.bpf.probes import KernelProbes, ProbeOptions  # noqa: E402

FLOOR = r"""
BPF_PERCPU_ARRAY(stamp, u64, 2);
RAW_TRACEPOINT_PROBE(sys_enter) { int k = 0; u64 *v = stamp.lookup(&k); if (v) *v = bpf_ktime_get_ns(); return 0; }
RAW_TRACEPOINT_PROBE(sys_exit)  { int k = 1; u64 *v = stamp.lookup(&k); if (v) *v = bpf_ktime_get_ns(); return 0; }
"""

NAIVE = r"""
struct val { u64 count; u64 ns; u64 start; };
BPF_HASH(per_tid, u32, struct val, 65536);
RAW_TRACEPOINT_PROBE(sys_enter) {
    u32 tid = bpf_get_current_pid_tgid(); struct val zero = {};
    struct val *v = per_tid.lookup_or_try_init(&tid, &zero);
    if (v) v->start = bpf_ktime_get_ns();
    return 0;
}
RAW_TRACEPOINT_PROBE(sys_exit) {
    u32 tid = bpf_get_current_pid_tgid(); struct val *v = per_tid.lookup(&tid);
    if (v && v->start) { v->count++; v->ns += bpf_ktime_get_ns() - v->start; }
    return 0;
}
"""


def run_dd(count: int, before_release: Callable[[int], None] | None = None) -> float:
    """Seconds dd takes from release to exit."""
    child = _GatedChild(["dd", "if=/dev/zero", "of=/dev/null", "bs=1", f"count={count}", "status=none"])
    if before_release:
        before_release(child.pid)
    start = time.perf_counter_ns()
    child.release()
    os.waitpid(child.pid, 0)
    return (time.perf_counter_ns() - start) / 1e9


class Syscount:
    def __init__(self) -> None:
        self.proc: subprocess.Popen[str] | None = None

    def __enter__(self) -> Syscount:
        self.proc = subprocess.Popen(["syscount-bpfcc", "-L"], stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True)
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if "Ctrl+C" in line or "Tracing" in line:
                break
        time.sleep(0.5)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.communicate(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.communicate()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=400_000, help="bytes dd copies (2 syscalls each)")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds per configuration")
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench: needs root")
    ensure_tracefs()
    syscalls = 2 * args.count
    floor = compile_text(FLOOR)
    floor_detach = [lambda: floor.detach_raw_tracepoint(b"sys_enter"), lambda: floor.detach_raw_tracepoint(b"sys_exit")]
    for detach in floor_detach:
        detach()
    naive = compile_text(NAIVE)
    naive.detach_raw_tracepoint(b"sys_enter")
    naive.detach_raw_tracepoint(b"sys_exit")

    def with_bpf(bpf: Any, names: tuple[str, str]) -> Callable[[], float]:
        def run() -> float:
            bpf.attach_raw_tracepoint(tp=b"sys_enter", fn_name=names[0].encode())
            bpf.attach_raw_tracepoint(tp=b"sys_exit", fn_name=names[1].encode())
            try:
                return run_dd(args.count)
            finally:
                bpf.detach_raw_tracepoint(b"sys_enter")
                bpf.detach_raw_tracepoint(b"sys_exit")
        return run

    def with_fntax(tracked: bool, stats: bool) -> Callable[[], float]:
        def run() -> float:
            # As `fntax profile` loads for a command that is not a VM monitor.
            families = tuple(f for f in FAMILIES if f != "kvm")
            with KernelProbes(ProbeOptions(run_time_stats=stats, families=families)) as probes:
                return run_dd(args.count, probes.track if tracked else None)
        return run

    def with_agent_probes() -> float:
        # The agent's configuration: every process tracked, fork/exec/exit events on.
        with KernelProbes(ProbeOptions(trace_all=True, events=True, measure_probe_costs=False, timeline=False)) as probes:
            probes.open_events(lambda _event: None)
            return run_dd(args.count)

    def with_syscount() -> float:
        with Syscount():
            return run_dd(args.count)

    configs: dict[str, Callable[[], float]] = {
        "none": lambda: run_dd(args.count),
        "floor": with_bpf(floor, ("raw_tracepoint__sys_enter", "raw_tracepoint__sys_exit")),
        "syscount -L": with_syscount,
        "naive hash": with_bpf(naive, ("raw_tracepoint__sys_enter", "raw_tracepoint__sys_exit")),
        "fntax": with_fntax(True, False),
        "fntax+stats": with_fntax(True, True),
        "fntax idle": with_fntax(False, False),
        "fntax agent": with_agent_probes,
    }
    times: dict[str, list[float]] = {name: [] for name in configs}
    print(f"bench: dd bs=1 count={args.count} ({syscalls:,} syscalls), {args.rounds} interleaved rounds; "
          f"kernel {os.uname().release}, {cpu_model()}", file=sys.stderr)
    for round_no in range(args.rounds):
        for name, run in configs.items():
            times[name].append(run())
        print(f"bench: round {round_no + 1}/{args.rounds} done", file=sys.stderr)
    base = statistics.median(times["none"])
    added = {name: (statistics.median(t) - base) / syscalls * 1e9 for name, t in times.items()}
    print(f"\nkernel {os.uname().release}; {cpu_model()}; {os.cpu_count()} CPUs")
    print(f"{'configuration':<14} {'median s':>9} {'added ns/syscall':>17} {'x floor':>8} {'x syscount':>11}")
    for name, t in times.items():
        x_floor = added[name] / added["floor"] if added["floor"] > 0 else float("nan")
        x_sc = added[name] / added["syscount -L"] if added["syscount -L"] > 0 else float("nan")
        print(f"{name:<14} {statistics.median(t):>9.3f} {added[name]:>17.1f} {x_floor:>8.2f} {x_sc:>11.2f}")
    fntax = added["fntax"]
    goal_floor = fntax <= 1.25 * added["floor"]
    goal_sc = fntax <= 0.5 * added["syscount -L"]
    print(f"\ngoal fntax <= 1.25x floor:        {'PASS' if goal_floor else 'MISS'} ({fntax / added['floor']:.2f}x)")
    print(f"goal fntax <= 0.5x syscount -L:   {'PASS' if goal_sc else 'MISS'} ({fntax / added['syscount -L']:.2f}x)")
    agent = added["fntax agent"]
    print(f"with the agent attached:          {'PASS' if agent <= 1.25 * added['floor'] else 'MISS'}"
          f" ({agent / added['floor']:.2f}x floor, {agent / added['syscount -L']:.2f}x syscount -L)")


if __name__ == "__main__":
    main()
