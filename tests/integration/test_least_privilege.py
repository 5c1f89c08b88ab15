"""Least privilege: after loading, a real agent holds only --keep-capabilities, and still counts exactly.

Three agents run at once over the same workloads (each sees every process):
  * the default (dac_read_search, sys_ptrace): every thread's CapEff/CapPrm
    (/proc/PID/task/*/status) is exactly that set, the bounding and ambient
    sets are lowered, no_new_privs is on; workloads named by
    AWS_LAMBDA_FUNCTION_NAME read from /proc (the rules' second env rule, so
    the probe does not hand it over at exec) are counted exactly, as root and
    as another user; SIGHUP reloads the rules file; SIGTERM detaches everything;
  * sys_ptrace alone: root's workload is named, another user's is not (its
    /proc/PID/environ is mode 0400, owned by that user: dac_read_search);
  * none: neither is named from /proc (so the figures above are the kept
    capabilities' doing), but map reads, event polling and detaching need no
    capability: the workload the probe names at exec is counted exactly.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import IO, Any, Iterator

import pytest

from agent_churn import RunningAgent, Samples, by_function, total  # type: ignore[import-not-found]
from conftest import (  # type: ignore[import-not-found]
    FNTAX,
    WORKLOADS,
    free_port,
    loaded_program_ids,
    programs_held_by,
    wait_programs_gone,
)
from dashboards_helpers import wait_http  # type: ignore[import-not-found]

from profiler.agent.privileges import DEFAULT_KEEP, describe, mask_of

pytestmark = pytest.mark.bpf

CALLS = 300_000  # getppid calls per workload: long enough to be read from /proc while it runs
NOBODY = 65534
TRACEFS = Path("/sys/kernel/tracing")
# The probe reads the first env rule's variable at exec; the second comes from /proc/PID/environ.
RULES = ("rules:\n"
         "  - env: FNTAX_LP_PROBE\n"
         "  - env: AWS_LAMBDA_FUNCTION_NAME\n"
         "unmatched: host\n")
RELOADED = ("rules:\n"
            "  - cmdline: '(?P<function>lp_reloaded)'\n" + RULES.removeprefix("rules:\n"))
AGENTS = {"default": ",".join(DEFAULT_KEEP), "ptrace": "sys_ptrace", "none": "none"}


def _probe_events() -> set[str]:
    lines: set[str] = set()
    for name in ("uprobe_events", "kprobe_events"):
        path = TRACEFS / name
        if path.exists():
            lines |= set(path.read_text().splitlines())
    return lines


def _status(path: Path) -> dict[str, str]:
    out = {}
    for line in path.read_text().splitlines():
        if line.startswith(("Cap", "NoNewPrivs")):
            name, value = line.split(":", 1)
            out[name] = value.strip()
    return out


@pytest.fixture(scope="module")
def work() -> Iterator[Path]:
    # Another user runs the workload: the binary and its output directory must be reachable for it.
    with tempfile.TemporaryDirectory(prefix="fntax-lp-", dir="/tmp") as name:
        directory = Path(name)
        directory.chmod(0o755)
        binary = directory / "accounting"
        subprocess.run(["gcc", "-O2", "-pthread", "-o", str(binary), str(WORKLOADS / "accounting.c")], check=True)
        shutil.copy(binary, directory / "lp_reloaded")
        out = directory / "out"
        out.mkdir()
        out.chmod(0o777)
        yield directory


@pytest.fixture(scope="module")
def agents(work: Path) -> Iterator[dict[str, dict[str, Any]]]:
    if os.geteuid() != 0:
        pytest.skip("needs root")
    rules = work / "rules.yaml"
    rules.write_text(RULES)
    events_before = _probe_events()
    started: dict[str, dict[str, Any]] = {}
    try:
        for name, keep in AGENTS.items():
            port = free_port()
            log: IO[str] = open(work / f"agent-{name}.log", "w+")
            proc = subprocess.Popen([FNTAX, "agent", "--listen", f"127.0.0.1:{port}", "--config", str(rules),
                                     "--interval", "0.5", "--keep-capabilities", keep],
                                    stdout=subprocess.DEVNULL, stderr=log, text=True)
            started[name] = {"proc": proc, "port": port, "log": log, "keep": keep,
                             "agent": RunningAgent(proc, port)}
        for entry in started.values():
            wait_http(f"http://127.0.0.1:{entry['port']}/metrics", seconds=120, process=entry["proc"])
        yield started
    finally:
        for entry in started.values():
            if entry["proc"].poll() is None:
                entry["proc"].kill()
                entry["proc"].wait()
            entry["log"].close()
    assert _probe_events() - events_before == set(), "probe events left in tracefs"


def _run(work: Path, binary: str, env: dict[str, str], user: int | None = None, linger: bool = False) -> None:
    """CALLS getppid calls. With linger, the process first waits in perl (which makes no getppid call)
    before it execs the workload: the agent reads its /proc/PID/environ at that exec, and a workload
    that ended before the agent got to it (a loaded host) would test nothing."""
    out = work / "out" / f"{time.monotonic_ns()}.json"
    base = {k: v for k, v in os.environ.items() if k not in ("AWS_LAMBDA_FUNCTION_NAME", "FNTAX_LP_PROBE")}
    command = [str(work / binary), str(out), "syscalls", str(CALLS)]
    if linger:
        command = ["perl", "-e", "select(undef, undef, undef, 1.5); exec @ARGV or die", *command]
    subprocess.run(command, env={**base, **env}, check=True,
                   timeout=60, user=user, group=user, extra_groups=[] if user is not None else None)


def _getppid(agent: RunningAgent) -> dict[str, float]:
    samples: Samples = agent.scrape()
    return by_function(samples, "fntax_syscalls_by_name_total", syscall="getppid")


def _wait_for(agent: RunningAgent, function: str, value: float, seconds: float = 60) -> dict[str, float]:
    """The agent's getppid calls by function, once `function` reached `value` (or the time is up).
    (A host busy with other work can make a scrape time out now and then: that is not an answer.)"""
    deadline = time.monotonic() + seconds
    found: dict[str, float] = {}
    while True:
        try:
            found = _getppid(agent)
        except OSError:
            pass
        if found.get(function) == value or time.monotonic() > deadline:
            return found
        time.sleep(0.25)


def test_only_the_kept_capabilities_are_left_in_every_thread(agents: dict[str, dict[str, Any]]) -> None:
    own = _status(Path("/proc/self/status"))
    can_lower_bounding = int(own["CapEff"], 16) >> 8 & 1  # CAP_SETPCAP
    for name, entry in agents.items():
        keep = set() if entry["keep"] == "none" else set(entry["keep"].split(","))
        mask = mask_of(keep) & int(own["CapPrm"], 16)
        tasks = list(Path(f"/proc/{entry['proc'].pid}/task").iterdir())
        assert len(tasks) >= 2, "the HTTP thread runs"  # started after the drop: it must hold no more
        for task in tasks:
            status = _status(task / "status")
            assert int(status["CapEff"], 16) == mask, (name, task.name, status)
            assert int(status["CapPrm"], 16) == mask, (name, task.name, status)
            assert int(status["CapInh"], 16) & ~mask == 0 and int(status["CapAmb"], 16) == 0, (name, status)
            assert status["NoNewPrivs"] == "1", (name, status)
            if can_lower_bounding:
                assert int(status["CapBnd"], 16) == mask, (name, status)
        entry["log"].seek(0)
        said = entry["log"].read()
        assert f"capabilities dropped after loading; kept: {describe(keep)}" in said, said
        assert "BPF run-time statistics stay off" in said


def test_figures_after_the_drop(agents: dict[str, dict[str, Any]], work: Path) -> None:
    _run(work, "accounting", {"AWS_LAMBDA_FUNCTION_NAME": "lp-root"}, linger=True)
    _run(work, "accounting", {"AWS_LAMBDA_FUNCTION_NAME": "lp-nobody"}, user=NOBODY, linger=True)
    _run(work, "accounting", {"FNTAX_LP_PROBE": "lp-probe"}, user=NOBODY)
    default = agents["default"]["agent"]
    for function in ("lp-root", "lp-nobody", "lp-probe"):
        found = _wait_for(default, function, CALLS)
    assert found.get("lp-root") == CALLS and found.get("lp-nobody") == CALLS and found.get("lp-probe") == CALLS, found
    # The others have folded the same processes by now (same interval); give them one more fold.
    _wait_for(agents["ptrace"]["agent"], "lp-probe", CALLS)
    _wait_for(agents["none"]["agent"], "lp-probe", CALLS)
    time.sleep(1.5)
    ptrace, none = _getppid(agents["ptrace"]["agent"]), _getppid(agents["none"]["agent"])
    lost = {name: total(e["agent"].scrape(), "fntax_events_lost_total") for name, e in agents.items()}
    print("events lost:", lost)
    assert ptrace.get("lp-root") == CALLS and ptrace.get("lp-probe") == CALLS, ptrace
    assert "lp-nobody" not in ptrace, ptrace  # another user's environ needs dac_read_search too
    assert none.get("lp-probe") == CALLS, none
    assert "lp-root" not in none and "lp-nobody" not in none, none  # no /proc/PID/environ without them
    # The probe costs measured at load stay exported when statistics can no longer be turned on.
    samples = default.scrape()
    assert any(name == "fntax_probe_mean_run_seconds" and value > 0 for (name, _labels), value in samples.items())


def test_sighup_reload_after_the_drop(agents: dict[str, dict[str, Any]], work: Path) -> None:
    entry = agents["default"]
    (work / "rules.yaml").write_text(RELOADED)
    entry["proc"].send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 60
    while True:
        entry["log"].seek(0)
        if "rules reloaded" in entry["log"].read():
            break
        assert time.monotonic() < deadline, "rules not reloaded"
        time.sleep(0.1)
    _run(work, "lp_reloaded", {}, linger=True)
    found = _wait_for(entry["agent"], "lp_reloaded", CALLS)
    assert found.get("lp_reloaded") == CALLS, found


def test_sigterm_detaches_everything_after_the_drop(agents: dict[str, dict[str, Any]]) -> None:
    held = {name: programs_held_by(entry["proc"].pid) for name, entry in agents.items()}
    assert all(held.values()), held
    for entry in agents.values():
        entry["proc"].send_signal(signal.SIGTERM)
    for name, entry in agents.items():
        assert entry["proc"].wait(timeout=60) == 0, name
        entry["log"].seek(0)
        said = entry["log"].read()
        assert "probes detached, agent stopped" in said, said
        assert wait_programs_gone(held[name]), f"{name}: programs left: {sorted(held[name] & loaded_program_ids())}"
    links = subprocess.run(["bpftool", "-j", "link", "list"], capture_output=True, text=True, check=True).stdout
    every = set().union(*held.values())
    assert [link for link in json.loads(links or "[]") if int(link.get("prog_id", -1)) in every] == []
