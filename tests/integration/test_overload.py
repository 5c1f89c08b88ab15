"""Overload (issue 12): a syscall storm from several processes at once.

Two tight getppid loops per CPU (accounting.c `syscalls N`, millions of
syscalls a second in total), each process its own function named by
AWS_LAMBDA_FUNCTION_NAME, run while a real agent is scraped every 0.2 s.
Checked: every scrape during the storm succeeds (the 10 s HTTP timeout is a
liveness bound, not a speed goal: scrape time under the storm is a `make
bench` figure, bench/overload.py), and once the storm is folded each storm
function's exported getppid count is exactly the N its process made (it
exited 0 and wrote its report).
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from agent_churn import (  # type: ignore[import-not-found]
    Samples,
    build_accounting,
    by_function,
    running_agent,
    settled,
)

pytestmark = pytest.mark.bpf

CALLS = 3_000_000  # ~0.3-1 s of getppid alone; a few seconds for two per CPU under the agent
PER_CPU = 2


def test_scrapes_succeed_and_counts_stay_exact_during_a_syscall_storm(tmp_path: Path) -> None:
    binary = build_accounting(tmp_path)
    names = [f"storm-{i}" for i in range(PER_CPU * (os.cpu_count() or 1))]
    outs = [tmp_path / f"{name}.json" for name in names]
    with running_agent() as agent:
        scrapes, failures, slowest = 0, [], 0.0
        began = time.monotonic()
        procs = [subprocess.Popen([str(binary), str(out), "syscalls", str(CALLS)],
                                  env={**os.environ, "AWS_LAMBDA_FUNCTION_NAME": name})
                 for name, out in zip(names, outs)]
        try:
            while any(p.poll() is None for p in procs):
                started = time.monotonic()
                try:
                    agent.scrape()  # urlopen(timeout=10)
                    scrapes += 1
                    slowest = max(slowest, time.monotonic() - started)
                except OSError as err:
                    failures.append(f"{type(err).__name__}: {err} after {time.monotonic() - started:.1f} s")
                time.sleep(0.2)
            codes = [p.wait(timeout=120) for p in procs]
            print(f"storm: {len(procs)} processes x {CALLS:,} getppid in {time.monotonic() - began:.1f} s, "
                  f"{scrapes} scrapes, slowest {slowest * 1e3:.0f} ms (scrape and parse)")
        finally:
            for proc in procs:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
        assert not failures, f"{len(failures)} of {scrapes + len(failures)} scrapes failed: {failures[:3]}"
        assert scrapes >= 3, f"the storm ended after {scrapes} scrapes: too short to test anything"
        assert codes == [0] * len(procs)
        # Each process wrote its report at its end: it made all CALLS calls.
        reports = [json.loads(out.read_text()) for out in outs]
        assert sorted(r["pid"] for r in reports) == sorted(p.pid for p in procs)

        def storm_calls(samples: Samples) -> float:
            counted = by_function(samples, "fntax_syscalls_by_name_total", syscall="getppid")
            return sum(counted.get(name, 0.0) for name in names)

        _, samples = settled(agent, storm_calls, seconds=20)
        counted = by_function(samples, "fntax_syscalls_by_name_total", syscall="getppid")
        assert {name: counted.get(name, 0.0) for name in names} == {name: float(CALLS) for name in names}
