"""Capture JSON layout, table rendering and atomic files (no kernel)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from profiler.model import summarise
from profiler.errors import ConfigError, InputError
from profiler.files import read_json, write_json_atomic
from profiler.model import CallStats, Capture, Counters, HostInfo, ProcessSample
from profiler.output.capture_json import capture_json
from profiler.output.report import render_table


def _capture() -> Capture:
    parent = ProcessSample(pid=10, comm="sh", workload=1, exited=True,
                           counters=Counters(syscalls=5, syscall_ns=5_000, oncpu_ns=2_000_000,
                                             voluntary_switches=3, faults_minor=7, faults_user=7),
                           syscalls_by_name={"read": CallStats(3, 3_000), "write": CallStats(2, 2_000)})
    child = ProcessSample(pid=11, comm="gzip", workload=1, exited=True,
                          counters=Counters(syscalls=2, syscall_ns=1_000, involuntary_switches=1,
                                            hardirq_ns=500, softirq_ns=700),
                          syscalls_by_name={"read": CallStats(2, 1_000)},
                          decompression_by_library={"libz": CallStats(4, 9_000_000)})
    procs = (parent, child)
    return Capture(command=("sh", "-c", "x"), pid=10, exit_code=0,
                   host=HostInfo("6.18", 2, "fallback"), workload=summarise(procs, 3_000_000_000),
                   per_process=procs, map_update_failures={"procs": 0})


def test_capture_json_has_the_issue_schema() -> None:
    data = capture_json(_capture())
    assert data["version"] == 1 and data["exit_code"] == 0 and data["command"] == ["sh", "-c", "x"]
    assert set(data["host"]) >= {"kernel", "cpus", "headers"}
    w = data["workload"]
    assert w["wall_seconds"] == 3.0 and w["processes"] == 2
    assert w["syscalls"]["count"] == 7
    assert w["syscalls"]["by_name"]["read"] == {"count": 5, "seconds": 4e-6}
    assert w["context_switches"] == {"voluntary": 3, "involuntary": 1}
    assert w["page_faults"] == {"minor": 7, "major": 0, "user": 7, "kernel": 0}
    assert w["irq_seconds"] == {"hard": 5e-7, "soft": 7e-7}
    assert w["decompression"]["by_library"]["libz"] == {"count": 4, "seconds": 0.009, "cpu_seconds": 0.0}
    assert w["decompression"]["calls"] == 4
    assert [p["pid"] for p in data["per_process"]] == [10, 11]
    assert data["per_process"][1]["comm"] == "gzip"
    json.dumps(data)  # serialisable


def test_table_mentions_the_figures() -> None:
    text = render_table(_capture())
    for needle in ("syscalls", "7 in", "3 voluntary", "1 involuntary", "libz", "read"):
        assert needle in text


def test_atomic_write_is_private_and_complete(tmp_path: Path) -> None:
    target = tmp_path / "c.json"
    write_json_atomic(target, {"version": 1, "x": [1, 2]})
    assert read_json(target, expect_version=1) == {"version": 1, "x": [1, 2]}
    assert os.stat(target).st_mode & 0o777 == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["c.json"]


def test_failed_write_leaves_no_file(tmp_path: Path) -> None:
    target = tmp_path / "c.json"
    with pytest.raises(TypeError):
        write_json_atomic(target, {"bad": object()})
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("content, message", [
    ("{not json", "not valid JSON"),
    ("[1, 2]", "expected a JSON object"),
    ('{"version": 2}', "field 'version' is 2, expected 1"),
])
def test_reader_names_file_and_problem(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "in.json"
    path.write_text(content)
    with pytest.raises(ConfigError, match=message) as info:
        read_json(path, expect_version=1)
    assert str(path) in str(info.value)


def test_missing_file_is_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no such file"):
        read_json(tmp_path / "nope.json")
