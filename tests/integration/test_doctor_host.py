"""`fntax doctor` on this host agrees with what the kernel exposes."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from conftest import FNTAX  # type: ignore[import-not-found]

pytestmark = pytest.mark.bpf


def test_doctor_matches_the_host() -> None:
    result = subprocess.run([FNTAX, "doctor", "--json"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    checks = json.loads(result.stdout)["checks"]
    # Independent sources: the kernel's own files.
    assert checks["kprobes"]["ok"] == Path("/sys/kernel/tracing/kprobe_events").exists()
    assert checks["btf"]["ok"] == Path("/sys/kernel/btf/vmlinux").exists()
    assert checks["hardware counters"]["ok"] == Path("/sys/bus/event_source/devices/cpu").exists()
    assert checks["uprobes"]["ok"] == Path("/sys/bus/event_source/devices/uprobe").exists()
    assert checks["raw tracepoints"]["ok"] and checks["perf software events"]["ok"]
    build = Path(f"/lib/modules/{os.uname().release}/build").resolve().name
    expected = "fallback" if not build.endswith(os.uname().release) else "matching"
    assert json.loads(result.stdout)["headers"] == expected
    text = subprocess.run([FNTAX, "doctor"], capture_output=True, text=True, timeout=120).stdout
    assert f"headers: {expected}" in text
