"""A full map is counted and reported, never silent."""

from __future__ import annotations

import os
import subprocess

import pytest

from profiler.model import summarise
from profiler.bpf.probes import KernelProbes, ProbeOptions
from profiler.model import Capture, HostInfo
from profiler.output.report import render_table

pytestmark = pytest.mark.bpf


def test_procs_map_full_is_counted_and_warned() -> None:
    # Room for 2 processes; the workload runs 1 shell + 8 children.
    options = ProbeOptions(max_procs=2, families=("syscalls", "sched"))
    with KernelProbes(options) as probes:
        read_end, write_end = os.pipe()
        child = subprocess.Popen(["sh", "-c", "read go; for i in 1 2 3 4 5 6 7 8; do /bin/true; done"],
                                 stdin=read_end)
        probes.track(child.pid)
        os.write(write_end, b"go\n")
        child.wait()
        snapshot = probes.snapshot()
    assert len(snapshot.processes) <= 2
    assert snapshot.map_update_failures["procs"] >= 6
    capture = Capture(command=("sh",), pid=child.pid, exit_code=0, host=HostInfo("k", 1, "fallback"),
                      workload=summarise(snapshot.processes, 1), per_process=snapshot.processes,
                      map_update_failures=snapshot.map_update_failures)
    assert "WARNING: map updates failed (maps full)" in render_table(capture)
