"""Stopping a capture stops the whole function, not only its first process.

SIGINT to `fntax profile -- sh -c 'sleep 30; true'` (the `; true` keeps dash from exec'ing
sleep in place, so sleep is the shell's child): fntax exits 130 and writes the
capture, and no `sleep 30` of that capture survives it (independent source:
/proc, every process whose command line is the workload's marked sleep).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
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


@pytest.mark.parametrize("script, marker", [
    ("sleep {marker}; true", "30.0417"),  # sleep is the shell's child
    pytest.param("(sleep {marker} &); sleep 30.0418; true", "30.0419", marks=pytest.mark.xfail(
        strict=True, reason="profiler/capture/run.py signals the command's process tree (psutil children): "
                            "a process that left the tree (double fork, reparented to init) is not in it; "
                            "a process group or cgroup would hold it")),
], ids=["child", "double-forked"])
def test_sigint_stops_every_process_of_the_workload(tmp_path: Path, script: str, marker: str) -> None:
    # marker: a sleep length nothing else on the host uses
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
        time.sleep(0.5)
        assert _sleepers(marker) == [], "sleep survived the capture"
    finally:
        for pid in _sleepers(marker):
            os.kill(pid, signal.SIGKILL)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
