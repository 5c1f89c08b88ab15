"""Integration tests load real probes: they need root and bcc."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

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


def wait_programs_gone(held: set[int], seconds: float = 10) -> bool:
    """The kernel frees programs after an RCU grace period: allow it a moment."""
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


@pytest.fixture
def run_profile(tmp_path: Path) -> Callable[..., dict[str, Any]]:
    """Run `fntax profile --json` on a command; return the capture."""
    def run(command: list[str], *extra: str, expect_exit: int = 0) -> dict[str, Any]:
        out = tmp_path / f"capture-{len(list(tmp_path.glob('capture-*')))}.json"
        result = subprocess.run([FNTAX, "profile", "-q", "--json", str(out), *extra, "--", *command],
                                capture_output=True, text=True, timeout=600)
        assert result.returncode == expect_exit, result.stderr
        data: dict[str, Any] = json.loads(out.read_text())
        return data
    return run
