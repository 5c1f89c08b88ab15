"""`fntax profile --timings`: each phase's wall time and when the result was out, on stderr."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from conftest import FNTAX  # type: ignore[import-not-found]

pytestmark = pytest.mark.bpf


def _phases(tmp_path: Path) -> tuple[dict[str, float], float, float, str]:
    out = tmp_path / "c.json"
    done = subprocess.run([FNTAX, "profile", "-q", "--no-agent", "--timings", "--json", str(out), "--",
                           "sleep", "0.2"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    (line,) = [x for x in done.stderr.splitlines() if x.startswith("timings: ")]
    parts = dict(re.fullmatch(r"(.+) (\d+\.\d+) s", part).groups()  # type: ignore[union-attr]
                 for part in line[len("timings: "):].split(", "))
    result_at, total = float(parts.pop("result at")), float(parts.pop("total"))
    return {name: float(value) for name, value in parts.items()}, result_at, total, line


def test_timings_name_every_phase_and_add_up(tmp_path: Path) -> None:
    # The probes' own costs are measured once per host, kernel and module, then kept.
    for kept in (Path(os.environ.get("FNTAX_HOME", "/var/lib/fntax")) / "cache").glob("probe-cost-*.json"):
        kept.unlink()
    phases, _result_at, _total, line = _phases(tmp_path)
    assert "probe cost" in phases, line
    phases, result_at, total, line = _phases(tmp_path)
    assert "probe cost" not in phases, line
    assert {"compile", "attach", "run", "analysis", "detach"} <= set(phases), line
    # The command sleeps 0.2 s: the kernel guarantees at least that much.
    assert phases["run"] >= 0.2
    # The result is out before the detach, and the phases fit in the total.
    assert result_at <= total - phases["detach"] + 0.05
    assert sum(phases.values()) <= total
    assert (tmp_path / "c.json").exists()
