"""Time to result (`make bench`, issue 13): `fntax profile` beside `perf trace -s` on the same workload.

Each row is one workload: a short one (a static C program making 10
getppid calls: a few ms) and a longer one (the same program asleep for 0.5 s). Each
tool runs it ROUNDS times, interleaved so machine noise hits all alike, and
the median wall time of the whole command (from launch to exit, as a shell
waits for it) is taken; "adds" is that less the bare workload's median. For
fntax also the time the result was out (the capture file written, from
`--timings`' "result at" plus the CLI's start-up). A cold capture leaves
the slow half of detaching to a helper after it exits; the bench waits for
its probes to be gone before the next tool runs (the helper holds the
kernel's tracepoint lock while it waits, which would slow the next attach).

  bare            the workload alone
  perf trace -s   perf's syscall summary (the reference)
  fntax cold      fntax profile --no-agent: compile, attach, run, detach
  fntax agent     fntax profile through a running agent (no probes of its own)
  syscount        bcc's syscount-bpfcc until it says it is tracing (its start-up only)

Goals (issue 13): cold at most 8x what perf trace adds, through the agent at
most 2x. Printed as ratios: these machines are noisy and differ from run to run.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FNTAX = str(Path(sys.executable).with_name("fntax"))
WORKLOAD_C = ROOT / "tests" / "workloads" / "accounting.c"
SYSCOUNT = "/usr/sbin/syscount-bpfcc"


def _timed(argv: list[str], env: dict[str, str] | None = None) -> tuple[float, str]:
    started = time.perf_counter()
    done = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
    took = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(argv[:4])}...: exit {done.returncode}: {done.stderr.strip()[-300:]}")
    return took, done.stderr


def _result_at(stderr: str, wall: float) -> float:
    """When the result was out, from launch: the CLI's start-up plus --timings' "result at"."""
    timings = re.search(r"result at ([0-9.]+) s, total ([0-9.]+) s", stderr)
    if not timings:
        return float("nan")
    result_at, total = float(timings.group(1)), float(timings.group(2))
    return wall - total + result_at  # start-up (before timings begin) + result at


def _program_ids() -> set[int]:
    out = subprocess.run(["bpftool", "-j", "prog", "show"], capture_output=True, text=True, check=True).stdout
    return {int(p["id"]) for p in json.loads(out or "[]")}


def _wait_teardown(before: set[int], patience_s: float = 60.0) -> None:
    """Until a cold capture's probes are gone: its background teardown holds
    the kernel's tracepoint lock and would slow whatever attaches next."""
    deadline = time.monotonic() + patience_s
    while _program_ids() - before and time.monotonic() < deadline:
        time.sleep(0.1)


def _syscount_startup() -> float:
    """Launch to "Tracing syscalls" of bcc's syscount (its compile and attach), then stop it."""
    if not os.path.exists(SYSCOUNT):
        return float("nan")
    started = time.perf_counter()
    proc = subprocess.Popen([SYSCOUNT, "-d", "30"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert proc.stdout is not None
    for line in proc.stdout:
        if "Tracing" in line:
            break
    took = time.perf_counter() - started
    proc.terminate()
    proc.wait()
    return took


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _start_agent(sock: str) -> subprocess.Popen[str]:
    agent = subprocess.Popen([FNTAX, "agent", "--listen", f"127.0.0.1:{_free_port()}", "--no-bpf-stats",
                              "--socket", sock],
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    assert agent.stderr is not None
    for line in agent.stderr:
        if "serving captures" in line:
            return agent
    raise SystemExit(f"the agent exited {agent.wait()} before serving captures")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    if shutil.which("perf") is None:
        raise SystemExit("perf is not installed (make bootstrap)")
    with tempfile.TemporaryDirectory() as tmp:
        binary = os.path.join(tmp, "accounting")
        subprocess.run(["gcc", "-O2", "-static", "-o", binary, str(WORKLOAD_C)], check=True)
        own, out, sock = os.path.join(tmp, "own.json"), os.path.join(tmp, "capture.json"), os.path.join(tmp, "a.sock")
        # perf trace handles each syscall in user space (2,000,000 calls took it
        # 113 s): the longer workload is long in time, not in calls.
        workloads = {"short (10 calls)": [binary, own, "syscalls", "10"],
                     "longer (0.5 s asleep)": [binary, own, "sleepfor", "500"]}
        print("time to result: starting an agent for the 'fntax agent' column", flush=True)
        agent = _start_agent(sock)
        try:
            rows = []
            for name, command in workloads.items():
                runs: dict[str, list[float]] = {k: [] for k in ("bare", "perf", "cold", "cold_result", "agent",
                                                                "agent_result")}
                for round_ in range(args.rounds):
                    print(f"  {name}: round {round_ + 1}/{args.rounds}", flush=True)
                    runs["bare"].append(_timed(command)[0])
                    runs["perf"].append(_timed(["perf", "trace", "-s", "-o", os.devnull, "--", *command])[0])
                    before = _program_ids()
                    wall, err = _timed([FNTAX, "profile", "-q", "--timings", "--no-agent", "--json", out,
                                        "--", *command])
                    _wait_teardown(before)
                    runs["cold"].append(wall)
                    runs["cold_result"].append(_result_at(err, wall))
                    wall, err = _timed([FNTAX, "profile", "-q", "--timings", "--agent-socket", sock, "--json", out,
                                        "--", *command])
                    if "compile" in err:
                        raise SystemExit(f"the capture did not go through the agent: {err.strip()}")
                    runs["agent"].append(wall)
                    runs["agent_result"].append(_result_at(err, wall))
                rows.append((name, {k: statistics.median(v) for k, v in runs.items()}))
        finally:
            agent.terminate()
            agent.wait(timeout=60)
        syscount = _syscount_startup()

    print()
    print("time to result (median wall seconds of the whole command; 'adds' = less the bare workload; "
          "x = adds / what perf trace -s adds)")
    head = (f"{'workload':<26} {'bare':>7} {'perf trace':>11} {'fntax cold':>17} {'cold result':>17} "
            f"{'fntax agent':>17} {'agent result':>17}")
    print(head)
    for name, m in rows:
        perf_adds = m["perf"] - m["bare"]

        def cell(key: str) -> str:
            adds = m[key] - m["bare"]
            return f"{adds:6.3f} ({adds / perf_adds:5.1f}x)" if perf_adds > 0 else f"{adds:6.3f}"
        print(f"{name:<26} {m['bare']:7.3f} {perf_adds:11.3f} {cell('cold'):>17} {cell('cold_result'):>17} "
              f"{cell('agent'):>17} {cell('agent_result'):>17}")
    print(f"syscount-bpfcc start-up (launch to tracing, for reference): {syscount:.3f} s")
    print("goals: fntax cold <= 8x, fntax agent <= 2x what perf trace -s adds (whole command)")


if __name__ == "__main__":
    main()
