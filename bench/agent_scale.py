"""Agent scale figures (`make bench`): scrape time and memory at 1,000 functions, idle CPU.

1. In-process: an aggregator holding 1,000 live functions (2 processes each,
   50 syscall names each), scraped through the real collector 20 times:
   median scrape time, exposition size and series count, and the process's RSS.
2. A real agent (`fntax agent`) left idle for 30 s: its CPU use from /proc.
Goals (issue 4): scrape < 100 ms, RSS < 200 MB at 1,000 functions, idle CPU < 1% of a core.
"""

from __future__ import annotations

import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from prometheus_client import generate_latest  # noqa: E402
from prometheus_client.registry import CollectorRegistry  # noqa: E402

from profiler.ledger.functions import Aggregator  # noqa: E402
from profiler.attribution.rules import ProcessFacts, load_rules  # noqa: E402
from profiler.figures import ONCPU, SYSCALLS  # noqa: E402
from profiler.system.procfs import ProcFS  # noqa: E402
from profiler.model import CallStats, Counters, KernelSnapshot, ProcessSample  # noqa: E402
from profiler.output.exposition import AgentSource, FntaxCollector, SelfStats, render_functions  # noqa: E402
from profiler.tax.compute import HostCosts  # noqa: E402
from profiler.tax.function_tax import TaxLedger  # noqa: E402


def rss_mb(pid: int | str = "self") -> float:
    return (ProcFS().rss_bytes(pid) or 0) / 2**20


def scrape_at_scale(functions: int = 1000) -> None:
    facts: dict[int, ProcessFacts] = {}
    agg = Aggregator(load_rules(None), facts=facts.get)
    samples = []
    for i in range(functions):
        for j in range(2):
            pid = 100_000 + 2 * i + j
            facts[pid] = ProcessFacts(pid, pid, pid, "python3", "python3 handler.py", "/",
                                      {"AWS_LAMBDA_FUNCTION_NAME": f"fn-{i:04d}"})
            agg.on_fork(pid, 1, 0)
            samples.append(ProcessSample(pid, "python3", 1, False, Counters(**{SYSCALLS.field: 1000 + i, ONCPU.field: 10**7}),
                                         {f"sys{k}": CallStats(k + 1, 1000) for k in range(50)},
                                         {"libz": CallStats(3, 10**6, 10**6)}))
    agg.update(KernelSnapshot(tuple(samples), {}, 0))
    source = AgentSource(lambda: SelfStats({}, {}, {}, {}, {}))
    tax = TaxLedger(HostCosts(1.5e-6, 1e-6, 1e-7, 1.3e-9), 0.0000166667, 128)
    registry = CollectorRegistry()
    registry.register(FntaxCollector(source))
    times, folds = [], []
    body = b""
    for _ in range(20):
        # The agent's loop folds the maps into a view once a second; a scrape
        # renders the latest view (re-rendered when it changed) + self-metrics.
        start = time.perf_counter()
        view = tax.update(agg.view(), {})
        folds.append(time.perf_counter() - start)
        start = time.perf_counter()
        body = render_functions(view) + generate_latest(registry)
        times.append(time.perf_counter() - start)
    series = sum(1 for line in body.splitlines() if line and not line.startswith(b"#"))
    median_ms = statistics.median(times) * 1e3
    rss = rss_mb()
    print(f"{functions} functions: scrape median {median_ms:.1f} ms ({'PASS' if median_ms < 100 else 'MISS'} < 100 ms), "
          f"{series:,} series ({series / functions:.1f} a function: not a goal; the top K bounds it), "
          f"{len(body) / 1024:.0f} KiB, "
          f"RSS {rss:.0f} MB ({'PASS' if rss < 200 else 'MISS'} < 200 MB); "
          f"the loop's fold into a view takes {statistics.median(folds) * 1e3:.1f} ms per interval")


def idle_agent(seconds: float = 30.0) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    fntax = str(Path(sys.executable).with_name("fntax"))
    agent = subprocess.Popen([fntax, "agent", "-q", "--listen", f"127.0.0.1:{port}"])
    try:
        time.sleep(15)  # compile and attach
        ticks = os.sysconf("SC_CLK_TCK")

        def cpu() -> float:
            stat = ProcFS().stat(agent.pid)
            return (stat.utime_ticks + stat.stime_ticks) / ticks if stat else 0.0

        before, start = cpu(), time.monotonic()
        time.sleep(seconds)
        share = (cpu() - before) / (time.monotonic() - start) * 100
        print(f"idle agent: {share:.2f}% of a core over {seconds:.0f} s ({'PASS' if share < 1 else 'MISS'} < 1%), "
              f"RSS {rss_mb(agent.pid):.0f} MB")
    finally:
        agent.terminate()
        agent.wait(timeout=60)


if __name__ == "__main__":
    scrape_at_scale()
    if os.geteuid() == 0:
        idle_agent()
