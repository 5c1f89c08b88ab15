"""Integration tests load real probes: they need root and bcc."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

FNTAX = str(Path(sys.executable).with_name("fntax"))
WORKLOADS = Path(__file__).resolve().parent.parent / "workloads"


def free_port() -> int:
    """A loopback port nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def loaded_program_ids() -> set[int]:
    """Every BPF program loaded on the host, as the kernel lists them (bpftool)."""
    out = subprocess.run(["bpftool", "-j", "prog", "list"], capture_output=True, text=True, check=True)
    return {int(p["id"]) for p in json.loads(out.stdout or "[]")}


def programs_held_by(pid: int) -> set[int]:
    """Program ids behind a process's file descriptors (/proc fdinfo)."""
    ids = set()
    for info in Path(f"/proc/{pid}/fdinfo").iterdir():
        try:
            for line in info.read_text().splitlines():
                if line.startswith("prog_id:"):
                    ids.add(int(line.split()[1]))
        except OSError:
            continue
    return ids


def wait_programs_gone(held: set[int], seconds: float = 60) -> bool:
    """Until the programs are freed. A clean exit leaves the detach to a helper
    that outlives the process (each probe waits on kernel grace periods, about
    5 s for a whole set, and sets detaching at once take turns), and even a
    killed process's programs go only after a grace period."""
    deadline = time.monotonic() + seconds
    while held & loaded_program_ids():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def _why_not() -> str | None:
    if os.geteuid() != 0:
        return "needs root to load eBPF probes"
    try:
        import bcc  # noqa: F401
    except ImportError:
        return "bcc is not importable (run make bootstrap)"
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    reason = _why_not()
    if reason is None:
        return
    for item in items:
        if "bpf" in item.keywords:
            item.add_marker(pytest.mark.skip(reason=reason))


Profile = Callable[..., dict[str, Any]]


def _profile_runner(tmp_path: Path, *always: str, check: Callable[[str], None] | None = None) -> Profile:
    def run(command: list[str], *extra: str, expect_exit: int = 0) -> dict[str, Any]:
        out = tmp_path / f"capture-{len(list(tmp_path.glob('capture-*')))}.json"
        result = subprocess.run([FNTAX, "profile", "-q", "--json", str(out), *always, *extra, "--", *command],
                                capture_output=True, text=True, timeout=600)
        assert result.returncode == expect_exit, result.stderr
        if check is not None:
            check(result.stderr)
        data: dict[str, Any] = json.loads(out.read_text())
        return data
    return run


@pytest.fixture
def run_profile(tmp_path: Path) -> Profile:
    """Run `fntax profile --json` on a command; return the capture."""
    return _profile_runner(tmp_path)


@pytest.fixture(params=["own probes", "through the agent"])
def profile_either_way(request: pytest.FixtureRequest, tmp_path: Path) -> Profile:
    """`fntax profile` loading its own probes, then asking a running agent
    (issue 13): a module whose `run_profile` is this runs each test both ways,
    since the capture must be the same either way."""
    cold = request.param == "own probes"
    where = ("--no-agent",) if cold else ("--agent-socket", request.getfixturevalue("capture_agent"))

    def took_the_path(stderr: str) -> None:
        # As --timings tells it: a compile only without the agent.
        assert ("compile" in stderr) == cold, stderr

    return _profile_runner(tmp_path, *where, "--timings", check=took_the_path)


@pytest.fixture(scope="module")
def capture_agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real agent serving captures on a socket of its own (for this module); yields the socket's path."""
    from profiler.bpf.loader import ProbeOptions
    from profiler.capture.via_agent import AgentProbes, connect

    sock = str(tmp_path_factory.mktemp("agent") / "agent.sock")
    proc = subprocess.Popen([FNTAX, "agent", "-q", "--listen", f"127.0.0.1:{free_port()}", "--no-bpf-stats",
                             "--socket", sock], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 180
        while True:
            if proc.poll() is not None:
                raise AssertionError(f"agent exited {proc.returncode}: {proc.stderr.read() if proc.stderr else ''}")
            found = connect(sock, ProbeOptions())
            if isinstance(found, AgentProbes):
                found.close()
                break
            assert time.monotonic() < deadline, f"the agent never served captures: {found}"
            time.sleep(0.2)
        yield sock
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
