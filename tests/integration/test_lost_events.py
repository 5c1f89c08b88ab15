"""Fork/exec events the perf buffer drops are counted, and no count is lost with them.

The agent runs with a one-page event buffer per CPU and is stopped while
several generators exec short processes as fast as they can: the buffer overflows
(fntax_events_lost_total > 0, bcc's lost-sample callback), yet the figures
come from the kernel maps, not the events, so the sum over every function
(host and _exited included) of getppid calls equals exactly what the
workload made: processes x N (their own loop, exit status 0 each).
Attribution of a process whose events were lost falls back to its own rule
on /proc, else its parent's function, else host (README).
"""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from agent_churn import build_accounting, churn, getppid_total, running_agent, settled, total  # type: ignore[import-not-found]

pytestmark = pytest.mark.bpf

CALLS = 173  # getppid calls per process: an odd number nothing else makes in bulk


def test_tiny_event_buffer_loses_events_but_no_counts(tmp_path: Path) -> None:
    binary = build_accounting(tmp_path)
    with running_agent("--interval", "0.2", "--top-syscalls", "100", "--event-pages", "1") as agent:
        before, _ = settled(agent, getppid_total, quiet_for=1.0)
        lost_before = total(agent.scrape(), "fntax_events_lost_total")
        # Stopped while the storm runs, the agent cannot drain its one page:
        # the buffer overflows for certain, however fast the agent drains it.
        agent.proc.send_signal(signal.SIGSTOP)
        try:
            result = churn(binary, CALLS, [[f"lost-{g}-{i}" for i in range(5)] for g in range(4)], count=600)
        finally:
            agent.proc.send_signal(signal.SIGCONT)
        # The kernel reports a loss in the buffer only when it next writes an
        # event there: a few more processes after the drain, on every CPU.
        tail = churn(binary, CALLS, [[f"lost-tail-{g}"] for g in range(4)], count=25)
        after, samples = settled(agent, getppid_total)
        lost = total(samples, "fntax_events_lost_total") - lost_before
    print(f"\nlost events: {result.started} processes in {result.seconds:.1f} s, "
          f"{lost:.0f} events lost, getppid {after - before:.0f} counted vs {result.ok * CALLS} made")
    assert result.ok == result.started == 2400 and tail.ok == tail.started == 100
    assert lost > 0, "the one-page buffer never overflowed: the test did not test loss"
    assert after - before == (result.ok + tail.ok) * CALLS
