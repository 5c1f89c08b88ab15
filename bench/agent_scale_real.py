"""The agent at host scale (`make bench`, issue 13): 100, 1,000 and 10,000 live functions as real processes.

Each function is a process of its own: a tiny static C program without libc
(FN_C below: its only syscalls are execve, getppid and nanosleep) that wakes
once a second and makes one getppid, named by AWS_LAMBDA_FUNCTION_NAME=fn-N.
A C launcher (LAUNCH_C) forks them at --rate a second in its own process
group. Stopping: the launcher kills its whole group when its stdin closes
(the bench ended, however it ended), every child dies with the launcher
(PR_SET_PDEATHSIG), and the bench SIGKILLs the group and checks that nothing
of it is left.

Agent A (`fntax agent`, default settings) sees 100, then 1,000 functions;
agent B, started with the 1,000 running and given the top K an operator would
choose at that scale (--top-syscalls, `--top-k`, 3 by default: the three
busiest names and `other`, 4 by-name series a function instead of 7; the ~22
other series a function has no flag trims), sees 9,000 more start. At
each scale, once the agent's folds count every function live and it has
folded --settle more times (its first folds see every process start):

- agent CPU over a --window seconds window, unscraped, from /proc/PID/stat
  (% of one core), and the load average then;
- fold time: the agent does not export it, so the bench runs the agent through
  a shim (this file, --shim) that wraps Agent.refresh, the fold of the maps
  into a view, and logs each fold's wall and on-CPU time and whether it read
  every live process or only those that exited; nothing in the agent changes;
- scrapes: GETs of /metrics at a steady period (--scrape-every), as
  Prometheus makes them: the first two teach the agent the period (shown
  apart), then --scrapes timed ones: wall time as a client sees it (median),
  the agent's own time to answer (fntax_scrape_duration_seconds), the agent's
  CPU per scrape (its whole CPU over the scrapes less its unscraped share of
  that time: the view is built and rendered by the folding thread ahead of
  an expected scrape); series and exposition size of the last;
- RSS (VmRSS) after the scrapes;
- at the largest scale, py-spy samples the agent for --pyspy seconds: where
  its CPU goes.

Goals (issue 13), printed, never asserted: at 1,000 live mostly idle
functions agent CPU < 3% of a core; at 10,000 < 20%, scrape < 1 s, RSS < 500 MB.
kernel.pid_max is raised for the run only if the largest scale would not fit
(and put back afterwards).
"""

from __future__ import annotations

import argparse
import collections
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

# One function: getppid, then sleep a second, forever. No libc, so no start-up
# syscalls: each process holds three syscall names in the kernel's
# per-process map (65,536 entries), not a dozen.
FN_C = r"""
#include <sys/syscall.h>

struct ts { long sec, nsec; };

static long sys2(long nr, long a, long b)
{
#if defined(__x86_64__)
    long ret;
    __asm__ volatile ("syscall" : "=a"(ret) : "a"(nr), "D"(a), "S"(b) : "rcx", "r11", "memory");
    return ret;
#elif defined(__aarch64__)
    register long x8 __asm__("x8") = nr, x0 __asm__("x0") = a, x1 __asm__("x1") = b;
    __asm__ volatile ("svc 0" : "+r"(x0) : "r"(x8), "r"(x1) : "memory");
    return x0;
#else
#error "x86_64 or aarch64"
#endif
}

__attribute__((force_align_arg_pointer, noreturn)) void _start(void)
{
    struct ts second = {1, 0};
    for (;;) {
        sys2(SYS_getppid, 0, 0);
        sys2(SYS_nanosleep, (long)&second, 0);
    }
}
"""

# launch FN: reads "FIRST COUNT RATE" lines from stdin; for each, forks COUNT
# children (RATE a second, 0: flat out), child I executing FN with only
# AWS_LAMBDA_FUNCTION_NAME=fn-I in its environment, and answers
# "STARTED FAILED". Its children die with it (PR_SET_PDEATHSIG); at EOF on
# stdin it SIGKILLs its process group (itself and every child).
LAUNCH_C = r"""
#define _GNU_SOURCE
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/prctl.h>
#include <time.h>
#include <unistd.h>

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
    if (argc != 2)
        return 2;
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    signal(SIGCHLD, SIG_IGN); /* children that die are reaped by the kernel (fn inherits it: no children) */
    pid_t self = getpid();
    char line[128];
    long first, count;
    double rate;
    while (fgets(line, sizeof line, stdin) && sscanf(line, "%ld %ld %lf", &first, &count, &rate) == 3) {
        long started = 0, failed = 0;
        double begin = now();
        for (long i = first; i < first + count; i++) {
            if (rate > 0) {
                double wait = begin + (i - first) / rate - now();
                if (wait > 0) {
                    struct timespec ts = {(time_t)wait, (long)((wait - (time_t)wait) * 1e9)};
                    nanosleep(&ts, NULL);
                }
            }
            pid_t pid = fork();
            if (pid == 0) {
                prctl(PR_SET_PDEATHSIG, SIGKILL);
                if (getppid() != self)
                    _exit(1);
                char name[64];
                snprintf(name, sizeof name, "AWS_LAMBDA_FUNCTION_NAME=fn-%ld", i);
                char *child_argv[] = {argv[1], NULL}, *child_envp[] = {name, NULL};
                execve(argv[1], child_argv, child_envp);
                _exit(127);
            }
            if (pid < 0)
                failed++;
            else
                started++;
        }
        printf("%ld %ld\n", started, failed);
        fflush(stdout);
    }
    kill(0, SIGKILL);
    return 0;
}
"""

# Goals (issue 13): CPU share of one core at a scale; scrape and RSS at the largest.
CPU_GOALS = {1000: 0.03, 10000: 0.20}
SCRAPE_GOAL_S = 1.0
RSS_GOAL_MB = 500.0
PROM_SCRAPE_INTERVAL = 15.0  # Prometheus's common scrape interval, for the "scraped" CPU estimate
WARM_SCRAPES = 2  # scrapes that teach the agent the period, before the timed ones
INTERVAL = 1.0  # the agent's --interval (its default; the bench does not change it)

RENDER = re.compile(rb"^fntax_scrape_duration_seconds (\S+)$", re.M)
LOST = re.compile(rb"^fntax_events_lost_total (\S+)$", re.M)
MAP_FILL = re.compile(rb'^fntax_map_(entries|capacity)\{map="([^"]+)"\} (\S+)$', re.M)


def shim(log: str, argv: list[str]) -> None:
    """Run `fntax agent` with Agent.refresh timed: one line per fold to `log`
    (monotonic end, wall s, on-CPU s of the folding thread, live fn-* functions)."""
    import ctypes

    from profiler.agent import runner
    from profiler.cli import main as fntax_main

    # The bench gone (even SIGKILLed), the agent stops as on SIGTERM: probes detached.
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM, 0, 0, 0)  # PR_SET_PDEATHSIG
    if os.getppid() == 1:
        return
    out = open(log, "a", buffering=1)
    fold = runner.Agent.refresh

    def refresh(self: runner.Agent, hear_events: bool = True, full: bool = True) -> None:
        wall, cpu = time.perf_counter(), time.thread_time()
        try:
            fold(self, hear_events, full)
        finally:
            wall, cpu = time.perf_counter() - wall, time.thread_time() - cpu
            # Without building views: the agent builds them only when scraped.
            live = sum(1 for name, n in self._aggregator.live_processes().items() if name.startswith("fn-") and n)
            out.write(f"{time.monotonic():.6f} {wall:.6f} {cpu:.6f} {live} {int(full)}\n")

    runner.Agent.refresh = refresh  # type: ignore[method-assign]
    sys.argv = ["fntax", *argv]
    fntax_main()


# -- helpers --------------------------------------------------------------------


def cpu_seconds(pid: int, tid: int | None = None) -> float:
    """utime + stime of a process (or of one of its threads), from /proc."""
    path = f"/proc/{pid}/stat" if tid is None else f"/proc/{pid}/task/{tid}/stat"
    fields = Path(path).read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def free_port() -> int:
    import socket
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


from overload import other_fntax  # noqa: E402  (bench/ is sys.path[0] when run as a script)


def in_group(pgid: int) -> list[int]:
    """Live (not zombie) processes of a process group."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            pids.append(int(entry.name))
    return pids


def pid_count() -> int:
    return sum(1 for e in Path("/proc").iterdir() if e.name.isdigit())


def fmt_bytes(n: float) -> str:
    return f"{n / 2**20:.1f} MiB" if n >= 2**20 else f"{n / 1024:.0f} KiB"


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


# -- the function processes ---------------------------------------------------------


class Fleet:
    """The live functions: children of one launcher, all in its process group."""

    def __init__(self, launcher: Path, fn: Path, rate: float) -> None:
        self.rate = rate
        self.live = 0
        self.proc = subprocess.Popen([str(launcher), str(fn)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     text=True, process_group=0)
        self.pgid = self.proc.pid

    def grow(self, to: int) -> float:
        assert self.proc.stdin and self.proc.stdout
        start = time.monotonic()
        self.proc.stdin.write(f"{self.live} {to - self.live} {self.rate}\n")
        self.proc.stdin.flush()
        started, failed = (int(x) for x in self.proc.stdout.readline().split())
        if failed or started != to - self.live:
            raise SystemExit(f"bench: launcher started {started}, {failed} forks failed")
        self.live = to
        return time.monotonic() - start

    def stop(self) -> int:
        """Kill the whole group; returns how many of it were still alive afterwards."""
        try:
            if self.proc.stdin:
                self.proc.stdin.close()
        except OSError:
            pass
        try:
            os.killpg(self.pgid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait()
        deadline = time.monotonic() + 10
        while (left := in_group(self.pgid)) and time.monotonic() < deadline:
            time.sleep(0.1)
        return len(left)


# -- the agent ----------------------------------------------------------------------


@dataclass(frozen=True)
class Fold:
    at: float  # monotonic time the fold ended
    wall: float
    cpu: float
    live: int  # fn-* functions with a live process in the view
    full: bool  # every live process read (else only those that exited)


class RunningAgent:
    def __init__(self, directory: Path, top_k: int | None, tag: str) -> None:
        self.port = free_port()
        self.log = directory / f"folds-{tag}.log"
        self.log.touch()
        self.top_k = top_k
        args = ["agent", "-q", "--listen", f"127.0.0.1:{self.port}"]
        if top_k is not None:
            args += ["--top-syscalls", str(top_k)]
        self.proc = subprocess.Popen([sys.executable, __file__, "--shim", str(self.log), *args],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        self.pid = self.proc.pid
        began = time.monotonic()
        while True:
            if self.proc.poll() is not None:
                raise SystemExit(f"bench: agent exited {self.proc.returncode}: "
                                 f"{self.proc.stderr.read() if self.proc.stderr else ''}")
            try:
                self.get()
                break
            except OSError:
                if time.monotonic() - began > 180:
                    raise SystemExit("bench: agent never served /metrics") from None
                time.sleep(0.2)
        print(f"bench: agent {tag} ({'default top K' if top_k is None else f'--top-syscalls {top_k}'}) "
              f"serving after {time.monotonic() - began:.1f} s", file=sys.stderr)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/metrics"

    def get(self) -> bytes:
        with urllib.request.urlopen(self.url, timeout=60) as response:
            return bytes(response.read())

    def folds(self) -> list[Fold]:
        out = []
        for line in self.log.read_text().splitlines():
            parts = line.split()
            if len(parts) == 5:
                out.append(Fold(float(parts[0]), float(parts[1]), float(parts[2]), int(parts[3]), parts[4] == "1"))
        return out

    def wait_fold(self, after: float, timeout: float = 120) -> Fold:
        """The first fold that ends after `after`."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"bench: agent exited {self.proc.returncode}")
            for fold in reversed(self.folds()):
                if fold.at > after:
                    return fold
            time.sleep(0.05)
        raise SystemExit("bench: the agent stopped folding")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


# -- one scale ------------------------------------------------------------------------


@dataclass
class Figures:
    functions: int
    top_k: int | None
    spawn_s: float
    seen_s: float  # from the first spawn to the first fold counting every function live
    settle_folds: list[Fold]
    cpu_share: float
    window_s: float
    folds: list[Fold]
    load: tuple[float, float, float]
    scrape_wall: list[float]
    warm_scrapes: list[float]
    render: list[float]
    cpu_per_scrape: float
    series: int
    body_bytes: int
    rss: float
    events_lost: float
    map_fill: dict[str, tuple[float, float]]

    @property
    def fold_share(self) -> float:
        return sum(f.cpu for f in self.folds) / self.window_s

    @property
    def scraped_share(self) -> float:
        return self.cpu_share + self.cpu_per_scrape / PROM_SCRAPE_INTERVAL


def measure(agent: RunningAgent, fleet: Fleet, functions: int, args: argparse.Namespace) -> Figures:
    began = time.monotonic()
    spawn = fleet.grow(functions)
    print(f"bench: {functions:,} functions live ({spawn:.1f} s to start them)", file=sys.stderr)
    # Wait for a fold that counts every function live, then --settle more.
    after = began
    while True:
        fold = agent.wait_fold(after)
        after = fold.at
        if fold.live >= functions:
            break
        if time.monotonic() - began > 180:
            raise SystemExit(f"bench: after 180 s the agent counts {fold.live:,} of {functions:,} functions live")
    seen = fold.at - began
    settle = [fold]
    for _ in range(args.settle):
        settle.append(agent.wait_fold(settle[-1].at))
    print(f"bench: every function folded {seen:.1f} s after the first start; folds since "
          + ", ".join(f"{f.wall * 1e3:.0f}" for f in settle) + " ms", file=sys.stderr)

    cpu0, t0 = cpu_seconds(agent.pid), time.monotonic()
    time.sleep(args.window)
    cpu1, t1 = cpu_seconds(agent.pid), time.monotonic()
    load = os.getloadavg()
    folds = [f for f in agent.folds() if t0 < f.at <= t1]
    share = (cpu1 - cpu0) / (t1 - t0)

    walls: list[float] = []
    renders: list[float] = []
    body = b""
    # Scrapes at a steady period, as Prometheus makes them, not aligned with
    # the folds: the first WARM_SCRAPES teach the agent the period (it reads
    # every live process and renders ahead of the next expected scrape from
    # then on) and are reported apart. Their CPU: the agent's whole CPU over
    # the scrapes less what it used unscraped in as long a time.
    cpu_s0, t_s0 = cpu_seconds(agent.pid), time.monotonic()
    warm: list[float] = []
    for i in range(WARM_SCRAPES + args.scrapes):
        time.sleep(max(0.0, t_s0 + i * args.scrape_every - time.monotonic()))
        start = time.perf_counter()
        body = agent.get()
        (warm if i < WARM_SCRAPES else walls).append(time.perf_counter() - start)
        match = RENDER.search(body)
        if match and i >= WARM_SCRAPES:
            renders.append(float(match.group(1)))
    cpu_s1, t_s1 = cpu_seconds(agent.pid), time.monotonic()
    per_scrape = max(0.0, (cpu_s1 - cpu_s0) - share * (t_s1 - t_s0)) / (WARM_SCRAPES + args.scrapes)
    series = sum(1 for line in body.splitlines() if line and not line.startswith(b"#"))
    lost = LOST.search(body)
    fill: dict[str, dict[str, float]] = collections.defaultdict(dict)
    for what, name, value in MAP_FILL.findall(body):
        fill[name.decode()][what.decode()] = float(value)
    figures = Figures(functions, agent.top_k, spawn, seen, settle, share, t1 - t0, folds, load, walls, warm, renders,
                      per_scrape, series, len(body), rss_mb(agent.pid), float(lost.group(1)) if lost else float("nan"),
                      {k: (v.get("entries", 0.0), v.get("capacity", 0.0)) for k, v in fill.items()})
    print(f"bench: {functions:,}: agent {share * 100:.1f}% of a core, scrape {median(walls) * 1e3:.0f} ms, "
          f"{series:,} series, RSS {figures.rss:.0f} MB", file=sys.stderr)
    return figures


# -- where the agent's CPU goes ------------------------------------------------------


def profile(pid: int, seconds: float, directory: Path) -> list[str]:
    """py-spy samples of the agent (on-CPU only): own time by function, time under the loop's steps."""
    spy = Path(sys.executable).with_name("py-spy")
    if not spy.exists():
        return ["py-spy not installed: no profile"]
    out = directory / "agent.raw"
    run = subprocess.run([str(spy), "record", "-p", str(pid), "-d", str(int(seconds)), "-r", "100",
                          "-f", "raw", "-o", str(out)], capture_output=True, text=True)
    if run.returncode != 0 or not out.exists():
        return [f"py-spy failed: {run.stderr.strip().splitlines()[-1:] or run.returncode}"]
    own: collections.Counter[str] = collections.Counter()
    under: collections.Counter[str] = collections.Counter()
    total = waits = 0
    steps = ("Agent.refresh", "MapReader.", "BatchTable.", "Aggregator.update", "Aggregator.view", "TaxLedger.update",
             "Agent._on_event", "Agent.metrics_body", "render_functions", "poll_events", "forget", "map_fill")
    for line in out.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        frames = stack.split(";")
        if frames[-1].startswith("select (selectors.py") or "_PollLikeSelector.select" in frames[-1]:
            waits += n  # the HTTP thread's poll: a wait py-spy can count as on-CPU
            continue
        total += n
        leaf = re.sub(r" \((\S+?):\d+\)$", lambda m: f" ({Path(m.group(1)).name})", frames[-1])
        own[leaf] += n
        seen = set()
        for frame in frames:
            for step in steps:
                if step in frame and step not in seen:
                    seen.add(step)
                    under[step] += n
    if not total:
        return ["py-spy: no on-CPU samples"]
    lines = [f"py-spy, {seconds:.0f} s at 100 Hz, {total} on-CPU samples of the agent "
             f"({total / seconds:.0f}% of a core while sampled; {waits} in the HTTP thread's select left out)",
             "  time under (inclusive): " + ", ".join(f"{step} {n / total:.0%}" for step, n in under.most_common(8))]
    lines.append("  own time (top frames):")
    lines += [f"    {n / total:5.1%}  {frame}" for frame, n in own.most_common(10)]
    return lines


# -- run ---------------------------------------------------------------------------


def table(results: list[Figures]) -> None:
    def row(label: str, values: Iterator[str] | list[str]) -> None:
        print(f"{label:<40}" + "".join(f"{v:>12}" for v in values))

    row("live functions (processes)", [f"{r.functions:,}" for r in results])
    row("top K (--top-syscalls)", ["6 (default)" if r.top_k is None else str(r.top_k) for r in results])
    row("agent CPU, % of a core (unscraped)", [f"{r.cpu_share * 100:.2f}" for r in results])
    row("  of which folds", [f"{r.fold_share * 100:.2f}" for r in results])
    row(f"  scraped every {PROM_SCRAPE_INTERVAL:.0f} s (estimate)", [f"{r.scraped_share * 100:.2f}" for r in results])
    def folds(r: Figures, full: bool) -> list[float]:
        return [f.cpu for f in r.folds if f.full == full] or [float("nan")]

    row("fold wall ms (median)", [f"{median([f.wall for f in r.folds]) * 1e3:.1f}" for r in results])
    row("fold CPU ms (median): exited only", [f"{median(folds(r, False)) * 1e3:.1f}" for r in results])
    row("  every live process read", [f"{median(folds(r, True)) * 1e3:.1f}" for r in results])
    row("fold wall ms (max)", [f"{max((f.wall for f in r.folds), default=float('nan')) * 1e3:.1f}" for r in results])
    row("full-read CPU us per live function", [f"{median(folds(r, True)) / r.functions * 1e6:.0f}"
                                               for r in results])
    row("folds in the window (full reads)", [f"{len(r.folds)} ({sum(f.full for f in r.folds)}) / {r.window_s:.0f} s"
                                             for r in results])
    row("first fold with all, ms", [f"{r.settle_folds[0].wall * 1e3:.0f}" for r in results])
    row("first scrapes ms (period unknown)", ["/".join(f"{w * 1e3:.0f}" for w in r.warm_scrapes) for r in results])
    row("scrape ms, client (median)", [f"{median(r.scrape_wall) * 1e3:.0f}" for r in results])
    row("scrape ms, client (max)", [f"{max(r.scrape_wall) * 1e3:.0f}" for r in results])
    row("render ms, agent's own (median)", [f"{median(r.render) * 1e3:.0f}" for r in results])
    row("agent CPU per scrape, ms", [f"{r.cpu_per_scrape * 1e3:.0f}" for r in results])
    row("series", [f"{r.series:,}" for r in results])
    row("  per function", [f"{r.series / r.functions:.1f}" for r in results])
    row("exposition", [fmt_bytes(r.body_bytes) for r in results])
    row("agent RSS MB", [f"{r.rss:.0f}" for r in results])
    row("events lost (total so far)", [f"{r.events_lost:.0f}" for r in results])
    for name in ("procs", "proc_syscalls", "tasks"):
        row(f"map {name} entries / capacity",
            [f"{r.map_fill[name][0] / r.map_fill[name][1]:.0%}" if r.map_fill.get(name, (0, 0))[1] else "n/a"
             for r in results])
    row("seconds to start them / all folded", [f"{r.spawn_s:.1f} / {r.seen_s:.1f}" for r in results])
    row("load average (1 min) after window", [f"{r.load[0]:.2f}" for r in results])


def goals(results: list[Figures]) -> None:
    by = {r.functions: r for r in results}
    for n, goal in CPU_GOALS.items():
        if n in by:
            share = by[n].cpu_share
            print(f"goal at {n:,} functions: agent CPU < {goal:.0%} of a core: {'PASS' if share < goal else 'MISS'} "
                  f"({share * 100:.2f}%; {by[n].scraped_share * 100:.2f}% scraped every {PROM_SCRAPE_INTERVAL:.0f} s)")
    largest = results[-1]
    scrape = median(largest.scrape_wall)
    print(f"goal at {largest.functions:,} functions: scrape < {SCRAPE_GOAL_S:.0f} s: "
          f"{'PASS' if scrape < SCRAPE_GOAL_S else 'MISS'} "
          f"({scrape:.2f} s median, {max(largest.scrape_wall):.2f} s max)")
    print(f"goal at {largest.functions:,} functions: RSS < {RSS_GOAL_MB:.0f} MB: "
          f"{'PASS' if largest.rss < RSS_GOAL_MB else 'MISS'} ({largest.rss:.0f} MB)")
    for r in results:
        wall, cpu = median([f.wall for f in r.folds]), median([f.cpu for f in r.folds])
        if r.folds and wall > INTERVAL:
            print(f"note: at {r.functions:,} functions a fold takes longer than the agent's {INTERVAL:.0f} s "
                  f"interval ({wall:.1f} s wall, {cpu:.1f} s CPU): it folded every "
                  f"{r.window_s / len(r.folds):.1f} s, so figures reach Prometheus that much later. Its loop "
                  f"folds, then polls events for up to {INTERVAL:.0f} s: with a core to itself it would use about "
                  f"{cpu / (cpu + INTERVAL):.0%} of one; the window's share is lower by as much as the fold "
                  f"waited for a CPU")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scales", default="100,1000,10000", help="live functions, ascending")
    parser.add_argument("--top-k", type=int, default=3, help="--top-syscalls of the agent at the largest scale")
    parser.add_argument("--window", type=float, default=20.0, help="seconds of the CPU window at each scale")
    parser.add_argument("--settle", type=int, default=3, help="folds after the first that counts every function")
    parser.add_argument("--scrapes", type=int, default=5, help="timed scrapes at each scale")
    parser.add_argument("--scrape-every", type=float, default=5.0, help="seconds between two scrapes")
    parser.add_argument("--rate", type=float, default=3000.0, help="processes started a second (0: flat out)")
    parser.add_argument("--pyspy", type=float, default=8.0, help="seconds of py-spy at the largest scale (0: none)")
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench: needs root")
    scales = [int(s) for s in args.scales.split(",")]
    largest = scales[-1]

    agents: list[RunningAgent] = []
    fleet: Fleet | None = None
    pid_max_path = Path("/proc/sys/kernel/pid_max")
    pid_max_was, pid_max_set = int(pid_max_path.read_text()), None

    def stop_on(signum: int, _frame: object) -> None:
        raise SystemExit(f"bench: signal {signum}")

    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, stop_on)
    results: list[Figures] = []
    spy: list[str] = []
    others: set[str] = set()
    started = time.monotonic()
    leftovers = -1
    with tempfile.TemporaryDirectory(prefix="fntax-scale-real-") as tmp:
        directory = Path(tmp)
        fn, launcher = directory / "fn", directory / "launch"
        subprocess.run(["gcc", "-O2", "-static", "-nostdlib", "-fno-stack-protector", "-fno-asynchronous-unwind-tables",
                        "-x", "c", "-o", str(fn), "-"], input=FN_C, text=True, check=True)
        subprocess.run(["gcc", "-O2", "-x", "c", "-o", str(launcher), "-"], input=LAUNCH_C, text=True, check=True)
        try:
            need = pid_count() + largest + 4096
            if pid_max_was < need:
                pid_max_set = 1 << (need - 1).bit_length()
                pid_max_path.write_text(str(pid_max_set))
                print(f"bench: kernel.pid_max {pid_max_was} -> {pid_max_set} for the run", file=sys.stderr)
            fleet = Fleet(launcher, fn, args.rate)
            agent: RunningAgent | None = None
            for n in scales:
                top_k = args.top_k if n == largest else None
                if agent is None or agent.top_k != top_k:
                    # At the largest scale, the operator's top K: a fresh agent
                    # that finds the smaller fleet running and sees the rest start.
                    if agent is not None:
                        agent.stop()
                    agent = RunningAgent(directory, top_k, chr(ord("A") + len(agents)))
                    agents.append(agent)
                others |= set(other_fntax({os.getpid(), *(a.pid for a in agents)}))
                results.append(measure(agent, fleet, n, args))
                others |= set(other_fntax({os.getpid(), *(a.pid for a in agents)}))
            if args.pyspy > 0 and agent is not None:
                spy = profile(agent.pid, args.pyspy, directory)
        finally:
            for a in agents:
                a.stop()
            if fleet is not None:
                leftovers = fleet.stop()
            if pid_max_set is not None and int(pid_max_path.read_text()) == pid_max_set:
                pid_max_path.write_text(str(pid_max_was))

    from profiler.system.host import cpu_model
    print(f"\nkernel {os.uname().release}; {cpu_model()}; {os.cpu_count()} CPUs; "
          f"each function one process: getppid once a second (static, no libc; "
          f"its syscalls: execve, getppid, nanosleep); agent --interval 1 (default); "
          f"CPU window {args.window:.0f} s unscraped, then {WARM_SCRAPES} + {args.scrapes} scrapes "
          f"every {args.scrape_every:.0f} s")
    table(results)
    goals(results)
    for line in spy:
        print(line)
    raised = f" (raised to {pid_max_set} for the run)" if pid_max_set else " (unchanged)"
    print(f"stopped: {largest:,} function processes killed with their process group, {leftovers} left; "
          f"kernel.pid_max {pid_max_was}{raised}; bench took {time.monotonic() - started:.0f} s")
    if others:
        print(f"note: {len(others)} other fntax agents/profiles ran meanwhile (their probes tax every syscall and "
              f"they saw these processes too)")


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "--shim":
        shim(sys.argv[2], sys.argv[3:])
    else:
        try:
            main()
        except KeyboardInterrupt:
            sys.exit("bench: interrupted (the agents and every function process stopped)")
