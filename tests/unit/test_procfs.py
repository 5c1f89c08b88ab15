"""ProcFS on the fixture tree in tests/fixtures/procfs: no root, no live /proc."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from profiler.attribution.facts import read_facts
from profiler.attribution.rules import load_rules
from profiler.system import cgroup as cgroup_module
from profiler.system.host import cpu_model
from profiler.system.procfs import CgroupCpuStat, CgroupEntry, ProcFS, SchedStat, ThreadInfo

FIXTURE = Path(__file__).resolve().parent.parent / "fixtures" / "procfs"
CID = "4f3a9c2b7d1e" + "0" * 52


@pytest.fixture
def proc() -> ProcFS:
    return ProcFS(root=FIXTURE / "proc", cgroupfs=FIXTURE / "cgroup")


def test_stat_fields(proc: ProcFS) -> None:
    stat = proc.stat(100)
    assert stat is not None
    assert (stat.pid, stat.comm, stat.state, stat.ppid, stat.start_time) == (100, "python3", "S", 1, 4242)
    assert (stat.utime_ticks, stat.stime_ticks) == (5, 3)


def test_comm_with_spaces_and_parentheses(proc: ProcFS) -> None:
    stat = proc.stat(300)
    assert stat is not None
    assert stat.comm == "Web (Content) x"
    assert stat.start_time == 7777


def test_thread_tgid_is_its_process(proc: ProcFS) -> None:
    assert proc.tgid(101) == 100
    assert proc.tgid(100) == 100


def test_threads_with_their_comm(proc: ProcFS) -> None:
    assert proc.threads(100) == [ThreadInfo(100, "python3"), ThreadInfo(101, "worker-1")]
    assert proc.threads(2) == [ThreadInfo(2, "kthreadd")]
    assert proc.threads(200) is None  # its task/ dir is not in the fixture: as if gone


def test_cmdline_argv_and_joined(proc: ProcFS) -> None:
    assert proc.argv(100) == ["python3", "handler_resize.py", "--size", "512"]
    assert proc.cmdline(100) == "python3 handler_resize.py --size 512"
    assert proc.argv(300) == ["/usr/lib/firefox/firefox -contentproc 12 tab"]
    assert proc.cmdline(300) == "/usr/lib/firefox/firefox -contentproc 12 tab"


def test_kernel_thread_has_empty_cmdline(proc: ProcFS) -> None:
    assert proc.argv(2) == []
    assert proc.cmdline(2) == ""
    assert proc.environ(2) == {}


def test_environ_with_non_utf8_bytes(proc: ProcFS) -> None:
    environ = proc.environ(100)
    assert environ is not None
    assert environ["AWS_LAMBDA_FUNCTION_NAME"] == "resize"
    assert environ["GREETING"] == "caf\N{REPLACEMENT CHARACTER}"
    assert "" not in environ and "NOVALUE" not in environ


def test_environ_permission_denied_is_empty(proc: ProcFS, monkeypatch: pytest.MonkeyPatch) -> None:
    real = Path.read_bytes

    def denied(self: Path) -> bytes:
        if self.name == "environ":
            raise PermissionError(13, "Permission denied", str(self))
        return real(self)

    monkeypatch.setattr(Path, "read_bytes", denied)
    assert proc.environ(200) == {}
    assert proc.environ(999) is None  # a process that is gone is still None
    facts = read_facts(200, proc)
    assert facts is not None and facts.environ == {}


def test_cgroup_lines_v1_and_v2(proc: ProcFS) -> None:
    assert proc.cgroups(100) == [CgroupEntry(0, (), "/fntax/fn-a")]
    v1 = proc.cgroups(200)
    assert v1 is not None
    assert v1[0] == CgroupEntry(12, ("memory",), f"/docker/{CID}")
    assert v1[1].controllers == ("cpu", "cpuacct")
    assert v1[2].controllers == ("name=systemd",)
    assert v1[3].unified and v1[3].path == "/"


def test_memory_limit(proc: ProcFS) -> None:
    assert proc.memory_limit_mb(100) == 256  # v2 memory.max
    assert proc.memory_limit_mb(200) == 512  # v1 memory.limit_in_bytes (its v2 line "/" has no memory.max)
    assert proc.memory_limit_mb(300) is None  # "max"
    assert proc.memory_limit_mb(2) is None  # root cgroup: no file
    assert proc.memory_limit_mb(999) is None


def test_huge_v1_limit_means_none(tmp_path: Path) -> None:
    root = tmp_path / "proc"
    (root / "5").mkdir(parents=True)
    (root / "5" / "cgroup").write_text("3:memory:/\n")
    proc = ProcFS(root=root, cgroupfs=FIXTURE / "cgroup")
    assert proc.memory_limit_mb(5) is None  # cgroup/memory/memory.limit_in_bytes is 2^63 - 4096


def test_cpu_model(proc: ProcFS) -> None:
    assert proc.cpu_model() == "Intel(R) Xeon(R) Fixture CPU @ 2.00GHz"
    assert cpu_model(proc) == "Intel(R) Xeon(R) Fixture CPU @ 2.00GHz"
    assert cpu_model(ProcFS(root=FIXTURE / "nowhere")) == "unknown"


def test_self_statm_schedstat_fdinfo(proc: ProcFS) -> None:
    assert proc.rss_bytes() == 1200 * os.sysconf("SC_PAGE_SIZE")
    assert proc.schedstat(100) == SchedStat(sum_exec_runtime_ns=123456789, run_delay_ns=2345678, timeslices=42)
    info = proc.fdinfo(7)
    assert info is not None and (info["run_time_ns"], info["run_cnt"]) == ("81234", "512")
    assert proc.fdinfo(8) is None


def test_cgroup_cpu_stat_v2_and_v1(proc: ProcFS) -> None:
    v2 = proc.cgroup_cpu_stat(proc.cgroup_dir("/fntax/fn-a"))
    assert v2 == CgroupCpuStat(nr_periods=120, nr_throttled=30, throttled_ns=250_000_000, usage_ns=1_500_000_000)
    v1 = proc.cgroup_cpu_stat(proc.cgroup_dir(f"/docker/{CID}", "cpu,cpuacct"))
    assert v1 == CgroupCpuStat(nr_periods=50, nr_throttled=5, throttled_ns=70_000_000, usage_ns=987654321)
    assert proc.cgroup_cpu_stat(proc.cgroup_dir("/nowhere")) is None


def test_cgroup_controllers_and_pids(proc: ProcFS) -> None:
    assert proc.cgroup_controllers() == ["cpuset", "cpu", "io", "memory", "hugetlb", "pids", "rdma", "misc"]
    assert proc.cgroup_pids(proc.cgroup_dir(f"/docker/{CID}", "cpu,cpuacct")) == [200, 201]
    assert proc.cgroup_pids(proc.cgroup_dir("/nowhere")) == []
    assert cgroup_module.detect(FIXTURE / "cgroup") == "v2"


def test_function_cgroup_throttled_reads_cpu_stat() -> None:
    group = cgroup_module.FunctionCgroup(256, 0.5, "fn-a", root=FIXTURE / "cgroup")
    group.dirs = [FIXTURE / "cgroup" / "fntax" / "fn-a"]  # as __enter__ leaves it, without creating anything
    assert group.throttled_ns() == 250_000_000
    group.dirs = [FIXTURE / "cgroup" / "cpu,cpuacct" / "docker" / CID]
    assert group.throttled_ns() == 70_000_000
    group.dirs = []


def test_vanished_process_is_none(proc: ProcFS) -> None:
    for read in (proc.stat, proc.tgid, proc.argv, proc.cmdline, proc.environ, proc.cgroups, proc.threads,
                 proc.schedstat, proc.rss_bytes, proc.memory_limit_mb):
        assert read(999) is None, read.__name__
    assert read_facts(999, proc) is None


def test_read_facts_through_the_reader(proc: ProcFS) -> None:
    facts = read_facts(101, proc)
    assert facts is not None
    assert (facts.pid, facts.tgid, facts.comm, facts.start_time) == (101, 100, "worker-1", 4250)
    assert facts.cgroup == "/fntax/fn-a"
    container = read_facts(200, proc)
    assert container is not None
    assert container.cgroup.splitlines() == [f"/docker/{CID}"] * 3 + ["/"]
    rules = load_rules(None)
    assert rules.attribute(container).function == "4f3a9c2b7d1e"
    function = read_facts(100, proc)
    assert function is not None
    assert rules.attribute(function).function == "resize"


def test_default_reader_reads_this_process() -> None:
    facts = read_facts(os.getpid())
    assert facts is not None and facts.tgid == os.getpid()
    assert (ProcFS().rss_bytes() or 0) > 0
