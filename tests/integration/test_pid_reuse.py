"""Pids wrap while functions churn: no count lands on the wrong function.

kernel.pid_max is lowered (and restored in a finally) so that thousands of
short processes, each named by AWS_LAMBDA_FUNCTION_NAME and each making
exactly N getppid calls, get pids that earlier processes of other functions
had. Independent source: the generators' own count of processes that exited
0, per function; the agent's /metrics parsed with prometheus_client's parser.
"""

from __future__ import annotations

import os
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


NS_LAST_PID = Path("/proc/sys/kernel/ns_last_pid")
QUICK_ROUNDS = 40
QUICK_CALLS = (3001, 5003)  # the old owner's and the new owner's: a mix-up shows in both totals


def test_a_pid_reused_at_once_keeps_each_function_exact(tmp_path: Path) -> None:
    """A process exits and its pid goes to the next process at once (here
    ns_last_pid forces it), long before the agent's next fold reads and
    deletes the old owner's entries: each owner's calls still land on its
    own function. Before the probes kept a new owner apart (probes/fntax.h,
    successor keys), the new one's first calls were added to the dead one's
    entry and counted for the dead one's function."""
    binary = build_accounting(tmp_path)
    base = {k: v for k, v in os.environ.items() if k != "AWS_LAMBDA_FUNCTION_NAME"}

    def run(function: str, calls: int) -> int:
        pid = os.posix_spawn(binary, [str(binary), "/dev/null", "syscalls", str(calls)],
                             {**base, "AWS_LAMBDA_FUNCTION_NAME": function})
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        return pid

    with running_agent("--interval", "2", "--top-syscalls", "100") as agent:
        _, start = settled(agent, getppid_total, quiet_for=1.0)
        reused = 0
        for _ in range(QUICK_ROUNDS):
            old = run("quick-old", QUICK_CALLS[0])
            # The last pid handed out, other processes' on this host included
            # (one that forked while `old` ran took the next pid).
            highest = int(NS_LAST_PID.read_text())
            NS_LAST_PID.write_text(str(old - 1))  # the next fork on this host takes `old`
            reused += run("quick-new", QUICK_CALLS[1]) == old
            # Other forks after `old` went on from it, into pids others had
            # this fold. The next old owner starts past all of them (and a
            # margin for forks meanwhile): three owners of one pid within a
            # fold are a known limit, not what this test is about.
            NS_LAST_PID.write_text(str(max(highest, int(NS_LAST_PID.read_text())) + 16))
        _, samples = settled(agent, getppid_total, quiet_for=4.5)  # two folds after the last exit
    counted = by_function(samples, "fntax_syscalls_by_name_total", syscall="getppid")
    before = by_function(start, "fntax_syscalls_by_name_total", syscall="getppid")
    got = {name: counted.get(name, 0.0) - before.get(name, 0.0) for name in ("quick-old", "quick-new")}
    print(f"\nquick reuse: {reused} of {QUICK_ROUNDS} new processes took the old one's pid; counted {got}")
    assert reused >= QUICK_ROUNDS // 2, "few pids were reused at once: the test did not test reuse"
    assert got == {"quick-old": QUICK_ROUNDS * QUICK_CALLS[0], "quick-new": QUICK_ROUNDS * QUICK_CALLS[1]}
