"""fntax's figures against the kernel's own accounting of the same run.

Sources: getrusage(RUSAGE_SELF) and /proc/self/schedstat written by the
workload itself at its very end (tests/workloads/accounting.c), and the
exact number of calls the workload makes.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable

import pytest

from conftest import WORKLOADS  # type: ignore[import-not-found]

pytestmark = pytest.mark.bpf

Profile = Callable[..., dict[str, Any]]


@pytest.fixture
def run_profile(profile_either_way: Profile) -> Profile:
    return profile_either_way


@pytest.fixture(scope="module")
def accounting(tmp_path_factory: pytest.TempPathFactory) -> str:
    binary = tmp_path_factory.mktemp("bin") / "accounting"
    subprocess.run(["gcc", "-O2", "-pthread", "-o", str(binary), str(WORKLOADS / "accounting.c")], check=True)
    return str(binary)


def _run(run_profile: Profile, binary: str, tmp_path: Path, mode: str, n: int,
         *extra: str) -> tuple[dict[str, Any], dict[str, Any]]:
    own = tmp_path / f"{mode}.json"
    capture = run_profile([binary, str(own), mode, str(n)], *extra)
    return capture, json.loads(own.read_text())


def _proc(capture: dict[str, Any], pid: int) -> dict[str, Any]:
    found: dict[str, Any] = next(p for p in capture["per_process"] if p["pid"] == pid)
    return found


def test_exact_syscall_count(run_profile: Profile, accounting: str, tmp_path: Path) -> None:
    capture, _own = _run(run_profile, accounting, tmp_path, "syscalls", 123_457)
    assert capture["workload"]["syscalls"]["by_name"]["getppid"]["count"] == 123_457
    assert capture["workload"]["syscalls"]["count"] > 123_457


def test_page_faults_agree_with_getrusage(run_profile: Profile, accounting: str, tmp_path: Path) -> None:
    capture, own = _run(run_profile, accounting, tmp_path, "faults", 50_000)
    faults = _proc(capture, own["pid"])["page_faults"]
    assert own["minflt"] > 50_000
    assert faults["minor"] == pytest.approx(own["minflt"], rel=0.01)
    assert faults["major"] == pytest.approx(own["majflt"], abs=2)
    # The touches happen in user mode: the exception tracepoint agrees too.
    assert faults["user"] + faults["kernel"] == pytest.approx(own["minflt"] + own["majflt"], rel=0.01)


def test_major_faults_agree_with_getrusage(run_profile: Profile, tmp_path: Path) -> None:
    # Read a file not in the page cache through a private mapping: each
    # first touch of a page is a major fault.
    data = tmp_path / "cold.bin"
    data.write_bytes(b"\1" * (32 << 20))
    own = tmp_path / "own.json"
    script = (
        "import mmap, os, resource, json, sys\n"
        "fd = os.open(sys.argv[1], os.O_RDONLY)\n"
        "os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)\n"
        "m = mmap.mmap(fd, 0, prot=mmap.PROT_READ)\n"
        "m.madvise(mmap.MADV_RANDOM)\n"
        "total = sum(m[i] for i in range(0, len(m), 4096))\n"
        "r = resource.getrusage(resource.RUSAGE_SELF)\n"
        "json.dump({'pid': os.getpid(), 'majflt': r.ru_majflt, 'minflt': r.ru_minflt}, open(sys.argv[2], 'w'))\n")
    subprocess.run(["sync"], check=True)
    import sys
    capture = run_profile([sys.executable, "-c", script, str(data), str(own)])
    truth = json.loads(own.read_text())
    faults = _proc(capture, truth["pid"])["page_faults"]
    assert truth["majflt"] > 100, "the page cache was not dropped: no major faults to compare"
    assert faults["major"] == pytest.approx(truth["majflt"], rel=0.01)
    # Minor faults are not compared here: a Python start takes a few hundred
    # faults through get_user_pages (exec's argument copy, MAP_POPULATE) that
    # getrusage counts and no fault hook sees; see the README.


def test_voluntary_switches_agree_with_getrusage(run_profile: Profile, accounting: str, tmp_path: Path) -> None:
    capture, own = _run(run_profile, accounting, tmp_path, "sleeps", 3_000)
    switches = _proc(capture, own["pid"])["context_switches"]
    # Not every short sleep switches (a timer that has expired by the time the
    # task would block returns at once): the workload's own getrusage is the
    # truth, the guard only makes sure there is something to compare.
    assert own["nvcsw"] >= 100, "the sleeps made almost no voluntary switches: nothing to compare"
    # fntax also sees the final switch-out after the report was written.
    assert switches["voluntary"] == pytest.approx(own["nvcsw"], rel=0.01, abs=2)
    assert switches["involuntary"] == pytest.approx(own["nivcsw"], rel=0.01, abs=2)


def test_runqueue_wait_of_two_spinners_sharing_a_cpu(run_profile: Profile, accounting: str,
                                                     tmp_path: Path) -> None:
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    capture = run_profile(["sh", "-c", f"{accounting} {a} spin 800 & {accounting} {b} spin 800 & wait"])
    own_a, own_b = json.loads(a.read_text()), json.loads(b.read_text())
    pa, pb = _proc(capture, own_a["pid"]), _proc(capture, own_b["pid"])
    for proc, own in ((pa, own_a), (pb, own_b)):
        # On-CPU time: the scheduler's own sum_exec_runtime (schedstat).
        assert proc["oncpu_seconds"] == pytest.approx(own["oncpu_ns"] / 1e9, rel=0.02)
        # Run-queue wait: the scheduler's own run_delay.
        assert proc["runqueue_wait_seconds"] == pytest.approx(own["runqueue_ns"] / 1e9, rel=0.05)
    # Pinned to one CPU, both spin at once: while both live, one of them
    # waits at every moment, so their waits add up to at least the shorter
    # one's run (less the few ms before the second started). Other load on
    # that CPU only adds wait: a bound, not a guess about timing.
    shorter = min(pa["oncpu_seconds"], pb["oncpu_seconds"])
    assert pa["runqueue_wait_seconds"] + pb["runqueue_wait_seconds"] >= 0.9 * shorter


def test_forked_child_and_thread_are_counted(run_profile: Profile, accounting: str, tmp_path: Path) -> None:
    capture, own = _run(run_profile, accounting, tmp_path, "fork", 7_777)
    child = _proc(capture, own["child"])
    parent = _proc(capture, own["pid"])
    assert child["syscalls"]["by_name"]["getppid"]["count"] == 7_777
    assert parent["syscalls"]["by_name"]["getppid"]["count"] == 7_777  # the thread's calls
    assert capture["workload"]["syscalls"]["by_name"]["getppid"]["count"] == 2 * 7_777
    assert capture["workload"]["processes"] == 2
