"""Stopping a capture stops the whole function, not only its first process.

SIGINT to `fntax profile -- sh -c '...'`: fntax exits 130, writes the capture
(interrupted, and `fntax report` says so), and no marked `sleep` of that
capture survives it (independent source: /proc, every process whose command
line is the workload's marked sleep). The marked sleep is the shell's child
(the `; true` keeps dash from exec'ing it in place), or it left the command's
tree (double fork, reparented to init), or it also left the session and
process group (setsid), or it left and ignores SIGTERM (SIGKILL after the
grace period). With --pid the target was not ours: stopping leaves it alive.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import FNTAX  # type: ignore[import-not-found]

pytestmark = pytest.mark.bpf


def _sleepers(marker: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                argv = (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if argv[:2] == [b"sleep", marker.encode()]:
                found.append(int(entry.name))
    return found


# marker: a sleep length nothing else on the host uses
@pytest.mark.parametrize("script, marker", [
    ("sleep {marker}; true", "30.0417"),  # sleep is the shell's child
    ("(sleep {marker} &); sleep 30.0418; true", "30.0419"),  # reparented to init
    ("(setsid sleep {marker} &); sleep 30.0418; true", "30.0421"),  # and its own session
    ("(trap '' TERM; setsid sleep {marker} &); sleep 30.0418; true", "30.0423"),  # and deaf to SIGTERM
], ids=["child", "double-forked", "setsid", "setsid-ignores-sigterm"])
def test_sigint_stops_every_process_of_the_workload(tmp_path: Path, script: str, marker: str) -> None:
    out = tmp_path / "c.json"
    proc = subprocess.Popen([FNTAX, "profile", "-q", "--json", str(out), "--", "sh", "-c",
                             script.format(marker=marker)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 90
        while not _sleepers(marker):
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            assert time.monotonic() < deadline, "the workload never started"
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=30)
        assert proc.returncode == 130
        assert json.loads(out.read_text())["interrupted"] is True
        # fntax waits for the workload's last process before it writes: none may be left
        assert _sleepers(marker) == [], "sleep survived the capture"
        report = subprocess.run([FNTAX, "report", str(out)], capture_output=True, text=True, timeout=60)
        assert report.returncode == 0, report.stderr
        assert "capture interrupted" in report.stdout
    finally:
        for pid in _sleepers(marker):
            os.kill(pid, signal.SIGKILL)
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_sigint_in_pid_mode_leaves_the_target_alive() -> None:
    # The target (and its child) were not started by fntax: stopping the capture only detaches.
    target = subprocess.Popen([sys.executable, "-c",
                               "import subprocess, time\nsubprocess.Popen(['sleep', '30.0425'])\ntime.sleep(60)"])
    proc = None
    try:
        deadline = time.monotonic() + 30
        while not _sleepers("30.0425"):
            assert time.monotonic() < deadline, "the target never started its child"
            time.sleep(0.05)
        proc = subprocess.Popen([FNTAX, "profile", "--pid", str(target.pid)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        assert proc.stderr is not None
        for line in proc.stderr:  # progress lines: the capture has begun once it says so
            if "attached to pid" in line:
                break
        else:
            raise AssertionError(f"fntax never attached (exit {proc.wait()})")
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=30)
        assert proc.returncode == 130
        time.sleep(0.3)
        assert target.poll() is None, "the watched process must survive"
        assert _sleepers("30.0425"), "the watched process's child must survive"
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()
        for pid in _sleepers("30.0425"):
            os.kill(pid, signal.SIGKILL)
        target.kill()
        target.wait()
