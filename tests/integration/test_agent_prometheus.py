"""A real Prometheus scrapes a real agent while real workloads run as functions.

Each function's figures, read back with PromQL, agree with the workloads' own
exact call counts and with a `fntax profile` capture of the same workload.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from conftest import FNTAX, WORKLOADS, free_port  # type: ignore[import-not-found]
from dashboards_helpers import wait_http  # type: ignore[import-not-found]

pytestmark = pytest.mark.bpf
# Any hierarchy will do for a cgroup rule: v1's pids controller, else the v2 root.
_ROOT = Path("/sys/fs/cgroup/pids") if Path("/sys/fs/cgroup/pids").is_dir() else Path("/sys/fs/cgroup")
CGROUP = _ROOT / "fntax-test" / "fn-cgroup"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    if shutil.which("prometheus") is None:
        pytest.skip("prometheus is not installed (make bootstrap installs it)")
    tmp = tmp_path_factory.mktemp("stack")
    binary = tmp / "accounting"
    subprocess.run(["gcc", "-O2", "-pthread", "-o", str(binary), str(WORKLOADS / "accounting.c")], check=True)
    shutil.copy(binary, tmp / "handler_fncmd")
    rules = tmp / "rules.yaml"
    rules.write_text("rules:\n"
                     "  - env: AWS_LAMBDA_FUNCTION_NAME\n"
                     "    memory_mb: 512\n"
                     "  - cgroup: '/fntax-test/(?P<function>fn-\\w+)'\n"
                     "    kind: container\n"
                     "  - cmdline: 'handler_(?P<function>\\w+)'\n"
                     "unmatched: host\n")
    agent_port, prom_port = free_port(), free_port()
    agent = subprocess.Popen([FNTAX, "agent", "-q", "--listen", f"127.0.0.1:{agent_port}", "--config", str(rules),
                              "--interval", "0.5"], stderr=subprocess.PIPE, text=True)
    (tmp / "prometheus.yml").write_text(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
        f"scrape_configs:\n  - job_name: fntax\n    static_configs:\n      - targets: ['127.0.0.1:{agent_port}']\n")
    prom = subprocess.Popen(["prometheus", f"--config.file={tmp / 'prometheus.yml'}",
                             f"--storage.tsdb.path={tmp / 'tsdb'}", f"--web.listen-address=127.0.0.1:{prom_port}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    CGROUP.mkdir(parents=True, exist_ok=True)
    try:
        wait_http(f"http://127.0.0.1:{agent_port}/metrics")
        wait_http(f"http://127.0.0.1:{prom_port}/-/ready")
        yield {"tmp": tmp, "binary": str(binary), "cmd_binary": str(tmp / "handler_fncmd"),
               "agent": agent, "agent_port": agent_port, "prom": f"http://127.0.0.1:{prom_port}"}
    finally:
        for proc in (prom, agent):
            proc.terminate()
        for proc in (prom, agent):
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
        for group in (CGROUP, CGROUP.parent):
            try:
                group.rmdir()
            except OSError:
                pass


def _query(stack: dict[str, Any], promql: str) -> list[dict[str, Any]]:
    url = f"{stack['prom']}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
    with urllib.request.urlopen(url, timeout=10) as response:
        body = json.load(response)
    assert body["status"] == "success", body
    result: list[dict[str, Any]] = body["data"]["result"]
    return result


def _value(stack: dict[str, Any], promql: str, expect: float | None = None, seconds: float = 30,
           until: Callable[[float], bool] | None = None) -> float:
    """The query's single value, waiting for scrapes to catch up (to `expect`, or until `until` holds)."""
    deadline = time.monotonic() + seconds
    value = float("nan")
    while time.monotonic() < deadline:
        result = _query(stack, promql)
        if result:
            value = float(result[0]["value"][1])
            if (expect is None or value == expect) and (until is None or until(value)):
                return value
        time.sleep(0.5)
    return value


def _run(stack: dict[str, Any], args: list[str], env: dict[str, str] | None = None,
         cgroup: bool = False) -> dict[str, Any]:
    own = Path(stack["tmp"]) / f"own-{time.monotonic_ns()}.json"
    command = [args[0], str(own), *args[1:]]
    if cgroup:
        command = ["sh", "-c", f'echo $$ > {CGROUP}/cgroup.procs && exec "$@"', "sh", *command]
    subprocess.run(command, env={**os.environ, **(env or {})}, check=True, timeout=60)
    data: dict[str, Any] = json.loads(own.read_text())
    return data


def test_functions_by_env_cgroup_cmdline_and_children(stack: dict[str, Any], tmp_path: Path) -> None:
    _run(stack, [stack["binary"], "syscalls", "40000"], env={"AWS_LAMBDA_FUNCTION_NAME": "fn-env"})
    _run(stack, [stack["binary"], "syscalls", "30000"], cgroup=True)
    _run(stack, [stack["cmd_binary"], "syscalls", "20000"])
    _run(stack, [stack["binary"], "fork", "5000"], env={"AWS_LAMBDA_FUNCTION_NAME": "fn-fork"})
    by_name = 'fntax_syscalls_by_name_total{{function="{}",syscall="getppid"}}'
    assert _value(stack, by_name.format("fn-env"), 40000) == 40000
    # The wrapper shell that joins the cgroup and execs the workload is the
    # same process: dash's one getppid() at start (for $PPID) counts too.
    assert _value(stack, by_name.format("fn-cgroup"), 30001) in (30000, 30001)
    assert _value(stack, by_name.format("fncmd"), 20000) == 20000
    # The forked child's and the thread's calls both count for the parent's function.
    assert _value(stack, by_name.format("fn-fork"), 10000) == 10000
    kinds = {r["metric"]["function"]: r["metric"]["kind"] for r in _query(stack, "fntax_syscalls_total")}
    assert kinds["fn-cgroup"] == "container" and kinds["fn-env"] == "process"
    # Dollars use the rule's memory size: tax seconds x 0.5 GB x price.
    tax = _value(stack, 'sum(fntax_tax_seconds_total{function="fn-env"})')
    dollars = _value(stack, 'fntax_tax_dollars_total{function="fn-env"}')
    assert dollars == pytest.approx(tax * 0.5 * 0.0000166667, rel=1e-3)


def test_agent_agrees_with_a_profile_capture(stack: dict[str, Any], tmp_path: Path) -> None:
    env = {"AWS_LAMBDA_FUNCTION_NAME": "fn-same"}
    own = _run(stack, [stack["binary"], "faults", "20000"], env=env)
    out = tmp_path / "capture.json"
    subprocess.run([FNTAX, "profile", "-q", "--json", str(out), "--", stack["binary"], str(tmp_path / "o.json"),
                    "faults", "20000"], check=True, timeout=300)
    capture = json.loads(out.read_text())["workload"]
    # A new series is served at 0 first, and a capture through the agent is
    # out before the agent's next fold: wait for the agent's figure to arrive.
    agent_minor = _value(stack, 'fntax_page_faults_total{function="fn-same",type="minor"}',
                         until=lambda v: v >= 0.98 * own["minflt"])
    # Same workload, two runs: the kernel's own count and fntax profile's agree with the agent's.
    assert agent_minor == pytest.approx(own["minflt"], rel=0.02)
    assert agent_minor == pytest.approx(capture["page_faults"]["minor"], rel=0.02)


def test_no_pid_or_command_line_labels_and_self_metrics(stack: dict[str, Any]) -> None:
    body = urllib.request.urlopen(f"http://127.0.0.1:{stack['agent_port']}/metrics", timeout=10).read().decode()
    from prometheus_client.parser import text_string_to_metric_families

    labels = {name for family in text_string_to_metric_families(body) for sample in family.samples
              for name in sample.labels}
    # kernel and cpu_model: fntax_host_info's, one series per host.
    assert labels <= {"function", "kind", "type", "mode", "category", "syscall", "library", "probe", "map",
                      "figure", "reason", "kernel", "cpu_model"}
    for name in ("fntax_probe_attached", "fntax_probe_run_seconds_total", "fntax_map_capacity",
                 "fntax_map_update_failures_total", "fntax_scrape_duration_seconds", "fntax_agent_cpu_seconds_total"):
        assert name in body, name
    assert _value(stack, 'fntax_probe_attached{probe="sched:sched_switch"}') == 1


def test_millisecond_processes_named_at_their_own_exec(stack: dict[str, Any], tmp_path: Path) -> None:
    # `env VAR=... prog` hands the variable over only at prog's execve, and
    # each run lives about a millisecond: gone before /proc could be read.
    for i in range(10):
        subprocess.run(["env", "AWS_LAMBDA_FUNCTION_NAME=fn-ms", stack["binary"], str(tmp_path / f"o{i}.json"),
                        "syscalls", "1000"], check=True, timeout=30)
    query = 'fntax_syscalls_by_name_total{function="fn-ms",syscall="getppid"}'
    assert _value(stack, query, 10_000) == 10_000


def test_a_failed_execve_leaves_no_name_for_the_next(stack: dict[str, Any], tmp_path: Path) -> None:
    """An execve that fails after its envp was read (named fn-ghost) must not
    name the same thread's next exec, whose environment has no name at all:
    that one is named by the command-line rule, from /proc."""
    named = tmp_path / "handler_fnafter"
    shutil.copy(stack["binary"], named)
    # perl makes no getppid call of its own (python makes dozens at start,
    # and what a process does before an exec that renames it goes with the
    # new name from the last fold on). Its target goes by environment: its
    # own command line must match no rule.
    script = ('{ local %ENV = (AWS_LAMBDA_FUNCTION_NAME => "fn-ghost"); exec "/nonexistent/fntax-ghost"; }'
              ' my $target = $ENV{FNTAX_TEST_TARGET}; %ENV = (PATH => "/usr/bin:/bin"); exec $target, @ARGV;')
    subprocess.run(["perl", "-e", script, str(tmp_path / "o.json"), "syscalls", "25000"],
                   env={**os.environ, "FNTAX_TEST_TARGET": str(named)}, check=True, timeout=60)
    query = 'fntax_syscalls_by_name_total{{function="{}",syscall="getppid"}}'
    assert _value(stack, query.format("fnafter"), 25_000) == 25_000
    assert not _query(stack, query.format("fn-ghost"))


def _schedstat_ns(pid: int) -> int:
    """Time on a CPU of every thread of a process, the kernel's own account (/proc/PID/task/*/schedstat)."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            total += int((task / "schedstat").read_text().split()[0])
        except (OSError, ValueError):
            pass  # a thread that just ended
    return total


def test_the_agents_own_work_is_not_the_hosts_tax(stack: dict[str, Any]) -> None:
    """The agent's map reads are bpf(2) calls: published under its own name, not as host's tax."""
    from prometheus_client.parser import text_string_to_metric_families

    def scrape() -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        body = urllib.request.urlopen(f"http://127.0.0.1:{stack['agent_port']}/metrics", timeout=10).read().decode()
        return {(s.name, tuple(sorted(s.labels.items()))): s.value
                for family in text_string_to_metric_families(body) for s in family.samples}

    def value(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str) -> float:
        return samples.get((name, (("function", "_fntax_agent"), ("kind", "process"))), 0.0)

    pid = stack["agent"].pid
    # The kernel counts from the process's start, fntax from its probes'
    # load: compare what both saw grow between two folds (--interval 0.5).
    s0 = _schedstat_ns(pid)
    time.sleep(1.0)
    first = scrape()  # folded after s0
    s1 = _schedstat_ns(pid)
    time.sleep(2.0)
    s2 = _schedstat_ns(pid)
    time.sleep(1.0)
    second = scrape()  # folded after s2
    s3 = _schedstat_ns(pid)
    assert value(second, "fntax_syscalls_total") > 0
    # Other processes may make a few bpf calls; the agent's are not among host's.
    host_bpf = second.get(("fntax_syscalls_by_name_total",
                           (("function", "host"), ("kind", "process"), ("syscall", "bpf"))), 0.0)
    assert host_bpf < value(second, "fntax_syscalls_total") / 10
    grown = (value(second, "fntax_oncpu_seconds_total") - value(first, "fntax_oncpu_seconds_total")) * 1e9
    # A slice still on a CPU at a fold is counted at the next one: up to one
    # time slice either way (20 ms, a generous bound for a slice of this agent).
    slack = 20_000_000
    assert 0.9 * (s2 - s1) - slack <= grown <= 1.1 * (s3 - s0) + slack, (s2 - s1, grown, s3 - s0)
