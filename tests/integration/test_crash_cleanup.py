"""SIGKILL in the middle of work leaves nothing behind, 20 times in a row.

`fntax agent` and `fntax profile` are killed with SIGKILL (no handler runs)
at varying points after their BPF programs appear: during compile/attach,
during the load-time probe-cost workload, while serving or capturing.
Independent checks after each kill, once the process is gone:
  * bpftool: none of the programs it held is still loaded, and no BPF link
    points at one of them;
  * tracefs: uprobe_events (and kprobe_events where present) hold nothing
    that was not there before;
  * the next start loads and attaches again (the next round is that start),
    and a last one serves /metrics and stops cleanly on SIGTERM.
A command held at profile's start gate dies with fntax: a helper that is the
child subreaper sees the held child blocked in read(2) on the gate pipe whose
write end fntax holds, kills fntax, and reaps the child: exit status 127, and
the command never ran.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from conftest import (  # type: ignore[import-not-found]
    FNTAX,
    free_port,
    loaded_program_ids,
    programs_held_by,
    wait_programs_gone,
)

pytestmark = pytest.mark.bpf

ROUNDS = 20
TRACEFS = Path("/sys/kernel/tracing")


def _probe_events() -> set[str]:
    lines: set[str] = set()
    for name in ("uprobe_events", "kprobe_events"):
        path = TRACEFS / name
        if path.exists():
            lines |= set(path.read_text().splitlines())
    return lines


def _links_to(programs: set[int]) -> list[dict[str, object]]:
    out = subprocess.run(["bpftool", "-j", "link", "list"], capture_output=True, text=True, check=True)
    return [link for link in json.loads(out.stdout or "[]") if int(link.get("prog_id", -1)) in programs]


def _wait_for_programs(proc: subprocess.Popen[bytes], seconds: float = 60) -> set[int]:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"fntax exited {proc.returncode} before loading"
        try:
            held = programs_held_by(proc.pid)
        except FileNotFoundError:
            held = set()
        if held:
            return held
        time.sleep(0.02)
    raise AssertionError("no BPF program loaded within 60 s")


def _kill_and_check(proc: subprocess.Popen[bytes], events_before: set[str]) -> int:
    """SIGKILL; then nothing of it stays loaded. Returns how many programs it held."""
    held = programs_held_by(proc.pid)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    assert wait_programs_gone(held), f"programs left loaded: {sorted(held & loaded_program_ids())}"
    assert _links_to(held) == [], "BPF links left pointing at the dead process's programs"
    assert _probe_events() - events_before == set(), "probe events left in tracefs"
    return len(held)


def _start_agent(port: int) -> subprocess.Popen[bytes]:
    return subprocess.Popen([FNTAX, "agent", "-q", "--listen", f"127.0.0.1:{port}", "--interval", "0.2",
                             "--no-bpf-stats"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _serving(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def test_sigkill_agent_twenty_times_leaves_nothing() -> None:
    rng = random.Random(12)
    events_before = _probe_events()
    killed_while_serving = 0
    for round_no in range(ROUNDS):
        port = free_port()
        proc = _start_agent(port)
        try:
            _wait_for_programs(proc)
            # Kill points spread over compile, attach, the probe-cost workload and serving.
            if round_no % 10 == 9:
                deadline = time.monotonic() + 60
                while not _serving(port):
                    assert proc.poll() is None and time.monotonic() < deadline, "agent never served"
                    time.sleep(0.05)
                killed_while_serving += 1
            else:
                time.sleep(rng.uniform(0.0, 0.8))
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            held = _kill_and_check(proc, events_before)
            assert held > 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert killed_while_serving == ROUNDS // 10
    # The next start after twenty kills: serves, and stops cleanly.
    port = free_port()
    proc = _start_agent(port)
    try:
        deadline = time.monotonic() + 60
        while not _serving(port):
            assert proc.poll() is None and time.monotonic() < deadline, "agent did not start after the kills"
            time.sleep(0.05)
        held = programs_held_by(proc.pid)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
        assert wait_programs_gone(held)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


# Runs as its own process: it is the child subreaper, so the gated child that
# fntax leaves behind is reparented to it and it can read the child's status.
GATE_HELPER = r'''
import ctypes, json, os, signal, subprocess, sys, time
PR_SET_CHILD_SUBREAPER = 36
libc = ctypes.CDLL(None, use_errno=True)
assert libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
fntax, marker = sys.argv[1], sys.argv[2]
proc = subprocess.Popen([fntax, "profile", "-q", "--json", "/dev/null", "--repeat", "10000", "--",
                         "/bin/sh", "-c", f"echo ran >> {marker}"],
                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

def children(pid):
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                found.append(int(entry))
    return found

def pipe_of(pid, fd):
    try:
        return os.readlink(f"/proc/{pid}/fd/{fd}")
    except OSError:
        return None

def held_at_gate(child):
    """The child is in read(2) (nr 0) on a pipe whose other end fntax holds."""
    try:
        with open(f"/proc/{child}/syscall") as f:
            parts = f.read().split()
    except OSError:
        return False
    if len(parts) < 2 or parts[0] != "0":
        return False
    fd = int(parts[1], 16)
    target = pipe_of(child, fd)
    if not target or not target.startswith("pipe:"):
        return False
    # Released already: fntax wrote the gate byte and the child has not run
    # to take it yet (the pipe holds data). Not held then.
    import fcntl, termios, struct as _struct
    try:
        peek = os.open(f"/proc/{child}/fd/{fd}", os.O_RDONLY | os.O_NONBLOCK)
        try:
            pending = _struct.unpack("i", fcntl.ioctl(peek, termios.FIONREAD, b"\0\0\0\0"))[0]
        finally:
            os.close(peek)
    except OSError:
        return False
    if pending:
        return False
    return any(pipe_of(proc.pid, int(fd)) == target for fd in os.listdir(f"/proc/{proc.pid}/fd"))

deadline = time.monotonic() + 90
result = {"caught": False}
while time.monotonic() < deadline and proc.poll() is None:
    kids = children(proc.pid)
    if not kids:
        continue
    os.kill(proc.pid, signal.SIGSTOP)
    gated = [k for k in kids if held_at_gate(k)]
    if not gated:
        os.kill(proc.pid, signal.SIGCONT)
        continue
    child = gated[0]
    held = set()
    for info in os.listdir(f"/proc/{proc.pid}/fdinfo"):
        try:
            with open(f"/proc/{proc.pid}/fdinfo/{info}") as f:
                held |= {int(l.split()[1]) for l in f if l.startswith("prog_id:")}
        except OSError:
            pass
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    # Reap fntax's other orphans (none expected) until the gated child is seen.
    while True:
        pid, status = os.waitpid(-1, 0)
        if pid == child:
            break
    result = {"caught": True, "child_exit": os.waitstatus_to_exitcode(status), "held": sorted(held)}
    break
else:
    proc.kill()
    proc.wait()
print(json.dumps(result))
'''


def _gate_round(tmp_path: Path) -> dict[str, Any]:
    marker = tmp_path / "ran"
    out = subprocess.run([sys.executable, "-c", GATE_HELPER, FNTAX, str(marker)], capture_output=True,
                         text=True, timeout=150)
    assert out.returncode == 0, out.stderr
    result: dict[str, Any] = json.loads(out.stdout)
    return result


def test_sigkill_profile_twenty_times_leaves_nothing_and_the_gate_dies_with_it(tmp_path: Path) -> None:
    rng = random.Random(7)
    events_before = _probe_events()
    gate_rounds = {ROUNDS // 2 - 1, ROUNDS - 1}
    for round_no in range(ROUNDS):
        if round_no in gate_rounds:
            result = _gate_round(tmp_path)
            assert result["caught"], "never caught a child held at the gate"
            # Held at the gate when fntax died: it read EOF and exited 127 at once.
            assert result["child_exit"] == 127, result
            held = set(result["held"])
            assert held and wait_programs_gone(held), "programs left loaded"
            assert _links_to(held) == []
            assert _probe_events() - events_before == set()
            continue
        marker = tmp_path / f"started-{round_no}"
        proc = subprocess.Popen([FNTAX, "profile", "-q", "--json", str(tmp_path / "c.json"), "--", "sh", "-c",
                                 f"touch {marker}; exec sleep 60"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            _wait_for_programs(proc)
            if round_no % 6 == 5:  # in the middle of capturing the command
                deadline = time.monotonic() + 60
                while not marker.exists():
                    assert proc.poll() is None and time.monotonic() < deadline, "command never started"
                    time.sleep(0.02)
            else:  # compile, attach or the probe-cost workload
                time.sleep(rng.uniform(0.0, 0.8))
            sleeper = _sleep_child_of(proc.pid)
            _kill_and_check(proc, events_before)
            assert not (tmp_path / "c.json").exists(), "a capture was written by a killed fntax"
            assert not list(tmp_path.glob(".c.json.*")), "temporary file left behind"
            if sleeper is not None:
                os.kill(sleeper, signal.SIGKILL)  # the orphaned command is issue 12's SIGINT item, not this one
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    ok = subprocess.run([FNTAX, "profile", "-q", "--json", str(tmp_path / "last.json"), "--", "true"],
                        capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0, ok.stderr
    assert json.loads((tmp_path / "last.json").read_text())["exit_code"] == 0


def _sleep_child_of(pid: int) -> int | None:
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[1]) == pid and "sleep" in stat.split("(", 1)[1].split(")")[0]:
            return int(entry.name)
    return None
