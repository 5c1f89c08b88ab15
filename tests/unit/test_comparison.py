"""Side-by-side comparison table (no kernel)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from profiler.output.compare import load_for_comparison, render_comparison
from profiler.errors import ConfigError


def _capture(duration: float, tax: float, decomp: float, dollars: float) -> dict:  # type: ignore[type-arg]
    return {"version": 1, "invocations": 1,
            "workload": {"wall_seconds": duration, "oncpu_seconds": duration / 2,
                         "syscalls": {"count": 100}, "decompression": {"seconds": decomp, "by_library": {"libz": {"count": 1, "seconds": decomp}}}},
            "tax": {"seconds": tax, "ratio": tax / duration, "own_work_seconds": duration - tax,
                    "observer_seconds": 0.0,
                    "by_category": {"syscalls": tax, "page_faults": 0.0, "context_switches": 0.0,
                                    "runqueue_wait": 0.0, "interrupts": 0.0, "decompression": 0.0,
                                    "virtualization": 0.0}},
            "cost": {"memory_mb": 512, "per_million_dollars": dollars, "tax_per_million_dollars": 1.0,
                     "baseline_per_million_dollars": 0.5},
            "baseline": {"name": "baremetal", "seconds": duration / 2}}


def test_side_by_side_with_difference(tmp_path: Path) -> None:
    a, b = tmp_path / "A.json", tmp_path / "B.json"
    a.write_text(json.dumps(_capture(0.200, 0.050, 0.020, 1.90)))
    b.write_text(json.dumps(_capture(0.100, 0.020, 0.050, 1.05)))
    text = render_comparison(load_for_comparison([str(a), str(b)]))
    header, *rows = text.splitlines()
    assert header.split() == ["A", "B", "B", "-", "A"]
    by_label = {row[:24].strip(): row for row in rows}
    assert "200.000 ms" in by_label["duration"] and "-100.000 ms" in by_label["duration"]
    assert "10.0%" in by_label["decompression share"] and "50.0%" in by_label["decompression share"]
    assert "+40.0 pt" in by_label["decompression share"]
    assert "$1.90" in by_label["$ per million"] and "-$0.85" in by_label["$ per million"]


def test_bad_capture_file_is_named(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('{"version": 3}')
    with pytest.raises(ConfigError, match="bad.json"):
        load_for_comparison([str(bad), str(bad)])
