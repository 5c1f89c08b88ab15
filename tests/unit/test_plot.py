"""Plots are real PNG/SVG files; bad paths and captures fail clearly (no kernel)."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest

from profiler.errors import ConfigError, InputError
from profiler.figures import CATEGORIES
from profiler.output.capture_json import from_json
from profiler.output.plot import plot_capture, plot_comparison
from profiler.tax.result import ProfileResult


def _typed(data: dict[str, Any]) -> ProfileResult:
    """Plots take the typed result, read by the one capture reader."""
    return from_json({"version": 1, **data}, "capture")


def _capture(runs: int) -> ProfileResult:
    by_category = {c: 0.001 * (i + 1) for i, c in enumerate(CATEGORIES)}
    return _typed({
        "command": ["python3", "handler.py"], "workload": {"wall_seconds": 0.08},
        "tax": {"seconds": sum(by_category.values()), "own_work_seconds": 0.05, "observer_seconds": 0.0005,
                "cpu_share_wait_seconds": 0.0, "by_category": by_category},
        "runs": [{"duration_seconds": 0.08 + 0.001 * i, "warmup": False} for i in range(runs)],
        "percentiles": {"duration_seconds": {"p20": 0.081, "p40": 0.082, "p60": 0.083, "p80": 0.084,
                                             "p99": 0.089, "mean": 0.0845}},
    })


def test_png_with_distribution(tmp_path: Path) -> None:
    out = tmp_path / "tax.png"
    plot_capture(_capture(10), out)
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
    assert [p.name for p in tmp_path.iterdir()] == ["tax.png"]  # no temp file left


def test_svg_single_run_and_foundation_capture(tmp_path: Path) -> None:
    plot_capture(_capture(1), tmp_path / "one.svg")
    ET.parse(tmp_path / "one.svg")
    foundation = {"command": ["ls"], "workload": {"oncpu_seconds": 0.004, "runqueue_wait_seconds": 0.0001,
                                                  "syscalls": {"seconds": 0.002, "blocked_seconds": 0.0005},
                                                  "irq_seconds": {"hard": 0.0, "soft": 0.0001},
                                                  "decompression": {"seconds": 0.0}}}
    plot_capture(_typed(foundation), tmp_path / "f.png")
    assert (tmp_path / "f.png").stat().st_size > 5_000


def test_comparison(tmp_path: Path) -> None:
    plot_comparison([("a-512MB", _capture(3)), ("b-512MB", _capture(3))], tmp_path / "cmp.png")
    assert (tmp_path / "cmp.png").read_bytes()[:4] == b"\x89PNG"


def test_bad_extension_and_capture(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="png or .svg"):
        plot_capture(_capture(1), tmp_path / "x.gif")
    with pytest.raises(ConfigError, match="workload"):
        plot_capture(_typed({"command": []}), tmp_path / "x.png")
