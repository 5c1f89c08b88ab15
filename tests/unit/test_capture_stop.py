"""Stopping a capture, without probes: who is signalled, and when.

The workload's tracked tasks come from a stand-in for KernelProbes.workload_tids;
the processes are real.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import pytest

from profiler.capture import run

IGNORES_SIGTERM = "import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\nprint(flush=True)\ntime.sleep(30)"


def test_a_process_no_longer_tracked_when_read_again_is_not_signalled() -> None:
    # The pid could have been reused between the two reads: never signal it then.
    proc = subprocess.Popen(["sleep", "30"])
    try:
        reads = iter([{proc.pid}, set()])
        assert run._signal_workload(None, lambda: next(reads), signal.SIGTERM) == set()
        time.sleep(0.1)
        assert proc.poll() is None
        assert run._signal_workload(None, lambda: {proc.pid}, signal.SIGTERM) == {proc.pid}
        assert proc.wait(timeout=5) == -signal.SIGTERM
    finally:
        proc.kill()
        proc.wait()


def test_stop_kills_a_tracked_process_deaf_to_sigterm_after_the_grace(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(run, "STOP_GRACE_S", 0.3)
    root = subprocess.Popen(["sleep", "30"])
    stray = subprocess.Popen([sys.executable, "-c", IGNORES_SIGTERM], stdout=subprocess.PIPE)
    try:
        assert stray.stdout is not None and stray.stdout.readline()  # its SIGTERM handler is set
        stop = run._StopRequest()
        stop.signum = signal.SIGINT
        started = time.monotonic()
        code = run._wait(root.pid, stop, lambda: {stray.pid} if stray.poll() is None else set())
        assert code == run.SIGNAL_EXIT_BASE + signal.SIGTERM
        assert stray.poll() == -signal.SIGKILL, "_wait returned while the workload still had a process"
        assert time.monotonic() - started < 0.3 + 2
    finally:
        for proc in (root, stray):
            if proc.returncode is None:
                proc.kill()
                try:
                    proc.wait(timeout=5)
                except ChildProcessError:
                    pass
