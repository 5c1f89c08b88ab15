"""Pids wrap while functions churn: no count lands on the wrong function.

kernel.pid_max is lowered (and restored in a finally) so that thousands of
short processes, each named by AWS_LAMBDA_FUNCTION_NAME and each making
exactly N getppid calls, get pids that earlier processes of other functions
had. Independent source: the generators' own count of processes that exited
0, per function; the agent's /metrics parsed with prometheus_client's parser.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from agent_churn import (  # type: ignore[import-not-found]
    build_accounting,
    by_function,
    churn,
    getppid_total,
    running_agent,
    settled,
)

pytestmark = pytest.mark.bpf

PID_MAX = Path("/proc/sys/kernel/pid_max")
LOW_PID_MAX = 4096
CALLS = 211


def _highest_pid_in_use() -> int:
    return max(int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit())


def test_each_function_total_holds_while_pids_wrap(tmp_path: Path) -> None:
    binary = build_accounting(tmp_path)
    functions = [[f"reuse-{g}-{i}" for i in range(7)] for g in range(3)]
    with running_agent("--interval", "0.2", "--top-syscalls", "100") as agent:
        before, start = settled(agent, getppid_total, quiet_for=1.0)
        old = PID_MAX.read_text().strip()
        try:
            PID_MAX.write_text(str(LOW_PID_MAX))
            result = churn(binary, CALLS, functions, count=2500)
        finally:
            PID_MAX.write_text(old)
        after, samples = settled(agent, getppid_total)
    assert PID_MAX.read_text().strip() == old
    print(f"\npid reuse: {result.started} processes in {result.seconds:.1f} s, pids {min(result.pids)}.."
          f"{max(result.pids)}, {result.reused_pids} spawns reused an earlier spawn's pid")
    assert result.ok == result.started == 7500
    assert max(result.pids) < LOW_PID_MAX
    assert result.reused_pids > 3000, "pids did not wrap: the test did not test reuse"
    assert after - before >= result.ok * CALLS  # other tests on this host may call getppid too
    counted = by_function(samples, "fntax_syscalls_by_name_total", syscall="getppid")
    counted_before = by_function(start, "fntax_syscalls_by_name_total", syscall="getppid")
    wrong = {name: (counted.get(name, 0.0) - counted_before.get(name, 0.0), n * CALLS)
             for name, n in result.per_function.items()
             if counted.get(name, 0.0) - counted_before.get(name, 0.0) != n * CALLS}
    assert wrong == {}, f"function: (counted, made) {wrong}"
