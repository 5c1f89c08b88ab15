"""Bad input, signals and clean detach of the real `fntax profile` CLI.

Independent checks: bpftool (the kernel's list of loaded BPF programs),
tracefs's probe event files, and the exit status seen by the shell.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import FNTAX, programs_held_by, wait_programs_gone  # type: ignore[import-not-found]

pytestmark = pytest.mark.bpf




def _probe_events() -> str:
    text = ""
    for name in ("uprobe_events", "kprobe_events"):
        path = Path("/sys/kernel/tracing") / name
        if path.exists():
            text += path.read_text()
    return text


def _run(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([FNTAX, *args], capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize("args, needle", [
    (["profile", "--", "fntax-no-such-command"], "command not found: fntax-no-such-command"),
    (["profile", "--pid", "999999999"], "no process with pid 999999999"),
    (["profile"], "nothing to profile"),
    (["profile", "--json", "/no/such/dir/out.json", "--", "true"], "/no/such/dir does not exist"),
    (["profile", "--json", "/proc/out.json", "--", "true"], "/proc/out.json: cannot write in /proc"),
    (["profile", "--", "{not_executable}"], "not executable: {not_executable}"),
])
def test_bad_input_gives_one_line_and_nonzero_exit(args: list[str], needle: str, tmp_path: Path) -> None:
    not_executable = tmp_path / "handler.sh"
    not_executable.write_text("echo hi\n")
    not_executable.chmod(0o644)
    args = [a.format(not_executable=not_executable) for a in args]
    needle = needle.format(not_executable=not_executable)
    result = _run(*args)
    assert result.returncode not in (0, 1), result
    errors = [line for line in result.stderr.splitlines() if not line.startswith("fntax: loading")]
    assert len(errors) == 1, result.stderr
    assert needle in errors[0]
    assert "Traceback" not in result.stderr


def test_json_to_a_device_never_replaces_it() -> None:
    import os
    import stat

    full = _run("profile", "-q", "--json", "/dev/full", "--", "true")
    assert full.returncode not in (0, 1)
    assert "/dev/full: cannot write" in full.stderr and "Traceback" not in full.stderr
    assert stat.S_ISCHR(os.stat("/dev/full").st_mode)
    null = _run("profile", "-q", "--json", "/dev/null", "--", "true")
    assert null.returncode == 0, null.stderr
    assert stat.S_ISCHR(os.stat("/dev/null").st_mode)


def test_json_dash_writes_the_capture_to_stdout(tmp_path: Path) -> None:
    result = subprocess.run([FNTAX, "profile", "-q", "--json", "-", "--", "true"], capture_output=True,
                            text=True, timeout=120, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["version"] == 1
    assert not (tmp_path / "-").exists()


def _traversable_by_others(path: Path) -> list[tuple[Path, int]]:
    """Open the checkout's directories to other users (a clone under a 0700
    `mktemp -d` is not); returns what to restore."""
    import os
    import stat

    changed = []
    for directory in path.parents:
        mode = directory.stat().st_mode
        if not mode & stat.S_IXOTH:
            os.chmod(directory, mode | stat.S_IXOTH)
            changed.append((directory, stat.S_IMODE(mode)))
    return changed


def test_without_root_one_line() -> None:
    import os

    restore = _traversable_by_others(Path(FNTAX))
    try:
        result = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                                 FNTAX, "profile", "-q", "--", "true"],
                                capture_output=True, text=True, timeout=60)
    finally:
        for directory, mode in restore:
            os.chmod(directory, mode)
    assert result.returncode != 0
    assert result.stderr.strip().count("\n") == 0, result.stderr
    assert "root" in result.stderr and "Traceback" not in result.stderr


def test_exit_code_passthrough() -> None:
    assert _run("profile", "-q", "--", "sh", "-c", "exit 7").returncode == 7


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_writes_capture_and_detaches_everything(tmp_path: Path, sig: signal.Signals) -> None:
    before_events = _probe_events()
    out = tmp_path / "capture.json"
    marker = tmp_path / "started"
    proc = subprocess.Popen(
        [FNTAX, "profile", "-q", "--json", str(out), "--", "sh", "-c",
         f"touch {marker}; i=0; while [ $i -lt 200 ]; do i=$((i+1)); done; exec sleep 60"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not marker.exists():
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "workload never started"
            time.sleep(0.05)
        time.sleep(0.3)
        held = programs_held_by(proc.pid)
        assert len(held) >= 10, "all probe families should be loaded during the capture"
        proc.send_signal(sig)
        _stdout, stderr = proc.communicate(timeout=30)
    except BaseException:
        proc.kill()
        proc.wait(timeout=60)
        raise
    assert proc.returncode == 128 + sig, stderr
    assert "Traceback" not in stderr
    capture = json.loads(out.read_text())
    assert capture["interrupted"] is True
    assert capture["workload"]["processes"] >= 1
    # The shell ran: it made syscalls (touch was a fork+exec) before the signal.
    assert capture["workload"]["syscalls"]["count"] > 0
    assert wait_programs_gone(held), "BPF programs left loaded"
    assert _probe_events() == before_events, "probe events left in tracefs"
    assert not list(tmp_path.glob(".capture.json.*")), "temporary file left behind"


def test_pid_mode_counts_a_running_process(tmp_path: Path) -> None:
    # A process that makes a known syscall at a steady pace; fntax attaches
    # for one second and must see its activity, then detach while it lives on.
    worker = subprocess.Popen([sys.executable, "-c",
                               "import os, time\nwhile True:\n    os.getppid(); time.sleep(0.001)"])
    try:
        out = tmp_path / "pid.json"
        result = _run("profile", "-q", "--json", str(out), "--pid", str(worker.pid), "--duration", "1")
        assert result.returncode == 0, result.stderr
        capture = json.loads(out.read_text())
        calls = capture["workload"]["syscalls"]["by_name"].get("getppid", {}).get("count", 0)
        # about 1 s at <= 1 call per ms: sleeps stretch it, so only bounds
        assert 100 <= calls <= 1000, calls
        assert worker.poll() is None, "the watched process must survive"
    finally:
        worker.kill()
        worker.wait()
