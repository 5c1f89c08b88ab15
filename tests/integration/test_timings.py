"""`fntax profile --timings`: each phase's wall time and when the result was out, on stderr."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from conftest import FNTAX  # type: ignore[import-not-found]

pytestmark = pytest.mark.bpf


def test_timings_name_every_phase_and_add_up(tmp_path: Path) -> None:
    out = tmp_path / "c.json"
    done = subprocess.run([FNTAX, "profile", "-q", "--timings", "--json", str(out), "--", "sleep", "0.2"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    (line,) = [x for x in done.stderr.splitlines() if x.startswith("timings: ")]
    parts = dict(re.fullmatch(r"(.+) (\d+\.\d+) s", part).groups()  # type: ignore[union-attr]
                 for part in line[len("timings: "):].split(", "))
    result_at, total = float(parts.pop("result at")), float(parts.pop("total"))
    phases = {name: float(value) for name, value in parts.items()}
    assert {"compile", "attach", "probe cost", "run", "analysis", "detach"} <= set(phases), line
    # The command sleeps 0.2 s: the kernel guarantees at least that much.
    assert phases["run"] >= 0.2
    # The result is out before the detach, and the phases fit in the total.
    assert result_at <= total - phases["detach"] + 0.05
    assert sum(phases.values()) <= total
    assert out.exists()
