"""Integration tests load real probes: they need root and bcc."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable

import pytest

FNTAX = str(Path(sys.executable).with_name("fntax"))
WORKLOADS = Path(__file__).resolve().parent.parent / "workloads"


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
