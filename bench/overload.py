"""Overload figures (`make bench`, issue 12): scrapes and agent CPU under a syscall storm.

A storm is PER_CPU processes per CPU, all started at once, each a function
named by AWS_LAMBDA_FUNCTION_NAME, each a tight getppid loop (the C workload
below) that runs for --seconds of its own clock and reports how many calls it
made, its wall time and its on-CPU time. Time-bounded rather than a fixed
count, so the bench takes the same time however loaded the machine is.
Storms without and with a real `fntax agent` (default settings) alternate, so
machine noise hits both alike:

  without, [agent starts] with, then the agent idle, [agent stops],
  without, [a fresh agent] with, idle, [stops], without

The agent is scraped every 0.5 s during its storms and while idle. Scrape
time is the wall time of HTTP GET /metrics as a client sees it (median and
max over the scrapes started while every storm process ran), next to the
agent's own render time (fntax_scrape_duration_seconds). Agent CPU is from
/proc/PID/stat over the same windows, as a share of one core. The storm's
rate is the workloads' own counts over their own wall time; the observer
slowdown is the median rate without the agent over the median rate with it.
After each storm with the agent, every storm function's exported getppid
count is checked against its workload's own count. Goal (issue 12): no scrape
under the storm takes more than 1 s.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from profiler.system.host import cpu_model  # noqa: E402

# storm OUT MS: getppid in a tight loop for MS ms of wall time (the clock is
# read through the vDSO every 1,024 calls: no other syscall in the loop), then
# JSON to OUT: its own count, wall time and on-CPU time.
STORM_C = r"""
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

static unsigned long long ns(clockid_t clock)
{
    struct timespec ts;
    clock_gettime(clock, &ts);
    return (unsigned long long)ts.tv_sec * 1000000000ull + (unsigned long long)ts.tv_nsec;
}

int main(int argc, char **argv)
{
    if (argc != 3)
        return 2;
    unsigned long long start = ns(CLOCK_MONOTONIC), cpu0 = ns(CLOCK_PROCESS_CPUTIME_ID);
    unsigned long long until = start + strtoull(argv[2], NULL, 10) * 1000000ull, now, calls = 0;
    do {
        for (int i = 0; i < 1024; i++)
            syscall(SYS_getppid);
        calls += 1024;
    } while ((now = ns(CLOCK_MONOTONIC)) < until);
    unsigned long long oncpu = ns(CLOCK_PROCESS_CPUTIME_ID) - cpu0;
    FILE *out = fopen(argv[1], "w");
    if (!out)
        return 3;
    fprintf(out, "{\"calls\": %llu, \"wall_ns\": %llu, \"oncpu_ns\": %llu}\n", calls, now - start, oncpu);
    return fclose(out) ? 3 : 0;
}
"""

SCRAPE_EVERY = 0.5
RENDER = re.compile(rb"^fntax_scrape_duration_seconds (\S+)$", re.M)
BY_NAME = re.compile(rb"^fntax_syscalls_by_name_total\{([^}]*)\} (\S+)$", re.M)


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, from /proc/PID/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def other_fntax(exclude: set[int] | None = None) -> list[str]:
    """Other fntax agents and profiles on the host (not this process, not `exclude`):
    their probes tax every syscall too, and they see our processes."""
    skip = {os.getpid(), *(exclude or ())}
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) in skip:
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        words = [Path(a.decode(errors="replace")).name for a in argv[:3]]
        if "fntax" in words and ("agent" in words or "profile" in words):
            found.append(f"{entry.name} ({' '.join(w for w in words if w)})")
    return found


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Scrapes:
    wall: list[float] = field(default_factory=list)
    render: list[float] = field(default_factory=list)
    failed: int = 0

    def take(self, url: str) -> None:
        start = time.perf_counter()
        try:
            with urllib.request.urlopen(url, timeout=30) as response:
                body = response.read()
        except OSError:
            self.failed += 1
            return
        self.wall.append(time.perf_counter() - start)
        match = RENDER.search(body)
        if match:
            self.render.append(float(match.group(1)))


@dataclass
class Storm:
    calls: dict[str, int]  # per function (one process each): the workload's own count
    rate: float  # calls a second: sum over processes of calls / own wall time
    ns_per_call: float  # on-CPU time per call

    @property
    def total(self) -> int:
        return sum(self.calls.values())


def storm(binary: Path, seconds: float, names: list[str], directory: Path, url: str | None = None,
          scrapes: Scrapes | None = None, agent_pid: int | None = None) -> tuple[Storm, float, float]:
    """One storm; scrapes while every process runs. Returns it, the agent's CPU seconds and the window."""
    outs = [directory / f"storm-{time.monotonic_ns()}-{i}.json" for i in range(len(names))]
    cpu0 = cpu_seconds(agent_pid) if agent_pid else 0.0
    start = time.monotonic()
    procs = [subprocess.Popen([str(binary), str(out), str(int(seconds * 1000))],
                              env={**os.environ, "AWS_LAMBDA_FUNCTION_NAME": name})
             for name, out in zip(names, outs)]
    try:
        next_scrape = start + 0.2
        while all(p.poll() is None for p in procs):
            if url and scrapes is not None and time.monotonic() >= next_scrape:
                scrapes.take(url)
                next_scrape += SCRAPE_EVERY
            time.sleep(0.01)
        cpu = cpu_seconds(agent_pid) - cpu0 if agent_pid else 0.0
        window = time.monotonic() - start
        for proc in procs:
            proc.wait(timeout=60)
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    if any(p.returncode != 0 for p in procs):
        sys.exit(f"bench: a storm process failed: exit codes {[p.returncode for p in procs]}")
    reports = [json.loads(out.read_text()) for out in outs]
    rate = sum(r["calls"] / (r["wall_ns"] / 1e9) for r in reports)
    per_call = sum(r["oncpu_ns"] for r in reports) / sum(r["calls"] for r in reports)
    return Storm({name: int(r["calls"]) for name, r in zip(names, reports)}, rate, per_call), cpu, window


def exported_getppid(body: bytes, names: list[str]) -> dict[str, int]:
    found = dict.fromkeys(names, 0)
    for labels, value in BY_NAME.findall(body):
        text = labels.decode()
        match = re.search(r'function="([^"]*)"', text)
        if 'syscall="getppid"' in text and match and match.group(1) in found:
            found[match.group(1)] += int(float(value))
    return found


@dataclass
class Session:
    """One agent's lifetime: a storm, then the agent idle."""
    storm: Storm
    storm_cpu: float
    storm_window: float
    idle_cpu: float
    idle_window: float
    counted: dict[str, int]

    @property
    def exact(self) -> bool:
        return self.counted == self.storm.calls


def agent_session(binary: Path, seconds: float, names: list[str], directory: Path, idle_seconds: float,
                  loaded: Scrapes, idle: Scrapes) -> Session:
    port = free_port()
    url = f"http://127.0.0.1:{port}/metrics"
    fntax = str(Path(sys.executable).with_name("fntax"))
    agent = subprocess.Popen([fntax, "agent", "-q", "--listen", f"127.0.0.1:{port}"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        began = time.monotonic()
        while True:
            if agent.poll() is not None:
                sys.exit(f"bench: agent exited {agent.returncode}: {agent.stderr.read() if agent.stderr else ''}")
            try:
                urllib.request.urlopen(url, timeout=2).read()
                break
            except OSError:
                if time.monotonic() - began > 180:
                    sys.exit("bench: agent never served /metrics")
                time.sleep(0.2)
        print(f"bench: agent serving after {time.monotonic() - began:.1f} s", file=sys.stderr)
        time.sleep(2)  # its first folds
        during, storm_cpu, storm_window = storm(binary, seconds, names, directory, url, loaded, agent.pid)
        # Once folded, each storm function's exported getppid count against its workload's own.
        deadline = time.monotonic() + 10
        counted: dict[str, int] = {}
        while time.monotonic() < deadline:
            try:
                counted = exported_getppid(urllib.request.urlopen(url, timeout=30).read(), names)
                if counted == during.calls:
                    break
            except OSError:
                pass  # the last one read decides
            time.sleep(0.5)
        # Idle, once the storm is folded (past its start-up work).
        cpu0, t0 = cpu_seconds(agent.pid), time.monotonic()
        taken = 0
        while time.monotonic() - t0 < idle_seconds:
            idle.take(url)
            taken += 1
            time.sleep(max(0.0, t0 + taken * SCRAPE_EVERY - time.monotonic()))
        idle_cpu, idle_window = cpu_seconds(agent.pid) - cpu0, time.monotonic() - t0
    finally:
        if agent.poll() is None:
            agent.send_signal(signal.SIGTERM)
            try:
                agent.wait(timeout=60)
            except subprocess.TimeoutExpired:
                agent.kill()
                agent.wait()
    return Session(during, storm_cpu, storm_window, idle_cpu, idle_window, counted)


def ratio(a: float, b: float) -> float:
    return a / b if b > 0 else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--per-cpu", type=int, default=2, help="storm processes per CPU")
    parser.add_argument("--seconds", type=float, default=5.0, help="a storm's length")
    parser.add_argument("--rounds", type=int, default=2, help="agent sessions (storms without: one more)")
    parser.add_argument("--idle", type=float, default=4.0, help="seconds each agent is measured idle")
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench: needs root")
    cpus = os.cpu_count() or 1
    names = [f"overload-{i}" for i in range(args.per_cpu * cpus)]
    others = set(other_fntax())
    loaded, idle = Scrapes(), Scrapes()
    withouts: list[Storm] = []
    sessions: list[Session] = []
    print(f"bench: storms of {len(names)} getppid loops ({args.per_cpu} per CPU), {args.seconds:.0f} s each; "
          f"kernel {os.uname().release}, {cpu_model()}, {cpus} CPUs", file=sys.stderr)
    with tempfile.TemporaryDirectory(prefix="fntax-overload-") as tmp:
        directory = Path(tmp)
        binary = directory / "storm"
        subprocess.run(["gcc", "-O2", "-x", "c", "-o", str(binary), "-"], input=STORM_C, text=True, check=True)
        for round_no in range(args.rounds + 1):
            withouts.append(storm(binary, args.seconds, names, directory)[0])
            others |= set(other_fntax())
            print(f"bench: round {round_no + 1}: storm without the agent done", file=sys.stderr)
            if round_no < args.rounds:
                sessions.append(agent_session(binary, args.seconds, names, directory, args.idle, loaded, idle))
                others |= set(other_fntax())
                print(f"bench: round {round_no + 1}: agent session done", file=sys.stderr)

    withs = [s.storm for s in sessions]
    without, with_rate = statistics.median(s.rate for s in withouts), statistics.median(s.rate for s in withs)
    without_ns = statistics.median(s.ns_per_call for s in withouts)
    with_ns = statistics.median(s.ns_per_call for s in withs)
    idle_share = sum(s.idle_cpu for s in sessions) / sum(s.idle_window for s in sessions)
    storm_share = sum(s.storm_cpu for s in sessions) / sum(s.storm_window for s in sessions)

    print(f"\nkernel {os.uname().release}; {cpu_model()}; {cpus} CPUs; storm: {len(names)} getppid loops "
          f"({args.per_cpu} per CPU, one function each) for {args.seconds:.0f} s; {args.rounds} agent sessions")
    print(f"{'agent':<28} {'idle':>9} {'storm':>9} {'storm/idle':>11}")
    print(f"{'scrapes (ok, failed)':<28} {f'{len(idle.wall)}, {idle.failed}':>9} "
          f"{f'{len(loaded.wall)}, {loaded.failed}':>9}")
    rows = (("scrape median ms (client)", idle.wall, loaded.wall, statistics.median),
            ("scrape max ms (client)", idle.wall, loaded.wall, max),
            ("render median ms (agent)", idle.render, loaded.render, statistics.median))
    for label, a, b, how in rows:
        x = how(a) * 1e3 if a else float("nan")
        y = how(b) * 1e3 if b else float("nan")
        print(f"{label:<28} {x:>9.1f} {y:>9.1f} {ratio(y, x):>11.2f}")
    print(f"{'agent CPU, % of a core':<28} {idle_share * 100:>9.1f} {storm_share * 100:>9.1f} "
          f"{ratio(storm_share, idle_share):>11.2f}")
    print("  per session (idle, storm): " + "; ".join(
        f"{s.idle_cpu / s.idle_window * 100:.1f}%, {s.storm_cpu / s.storm_window * 100:.1f}%" for s in sessions)
        + " (the agent attributes every process on the host: others' work shows here too)")
    print(f"\n{'storm':<28} {'M calls/s':>9} {'ns/call':>9} {'x without':>11}")
    for label, runs in (("without the agent", withouts), ("with the agent", withs)):
        for i, run in enumerate(runs):
            print(f"{f'{label} #{i + 1}':<28} {run.rate / 1e6:>9.2f} {run.ns_per_call:>9.0f} "
                  f"{run.rate / without:>11.2f}")
    print(f"\nobserver slowdown (medians): the storm runs {without / with_rate:.2f}x slower with the agent "
          f"({without / 1e6:.2f} vs {with_rate / 1e6:.2f} M getppid/s); on-CPU time per getppid "
          f"{with_ns / without_ns:.2f}x ({without_ns:.0f} vs {with_ns:.0f} ns)")
    for i, session in enumerate(sessions):
        state = "yes" if session.exact else "NO: " + ", ".join(
            f"{k} {session.counted.get(k, 0):,} of {v:,}" for k, v in session.storm.calls.items())
        print(f"session {i + 1}: exported getppid = the workloads' own counts "
              f"({session.storm.total:,} calls): {state}")
    worst = max(loaded.wall) if loaded.wall else float("inf")
    print(f"goal every scrape under the storm < 1 s: {'PASS' if worst < 1 and not loaded.failed else 'MISS'} "
          f"(max {worst * 1e3:.0f} ms, {loaded.failed} failed)")
    if others:
        print(f"note: other fntax processes ran meanwhile (their probes tax every syscall, the storms without "
              f"our agent included): {', '.join(sorted(others))}")


if __name__ == "__main__":
    main()
