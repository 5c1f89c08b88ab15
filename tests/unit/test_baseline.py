"""Recorded and imported baselines: round trips and clear errors (no kernel)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from profiler.tax import baseline
from profiler.errors import ConfigError, InputError


@pytest.fixture(autouse=True)
def _home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FNTAX_HOME", str(tmp_path / "home"))


def _capture(wall: float, syscalls: float) -> dict:  # type: ignore[type-arg]
    return {"version": 1, "host": {"kernel": "k"}, "workload": {"wall_seconds": wall},
            "tax": {"by_category": {"syscalls": syscalls, "page_faults": 0.001}}}


def test_recorded_baseline_round_trips() -> None:
    baseline.record("metal-box", _capture(0.25, 0.01))
    loaded = baseline.load("metal-box")
    assert loaded.kind == "recorded" and loaded.seconds == 0.25
    assert loaded.by_category == {"syscalls": 0.01, "page_faults": 0.001}
    names = [row["name"] for row in baseline.list_baselines()]
    assert names == ["baremetal", "metal-box"]


def test_recorded_baseline_with_runs_uses_their_mean() -> None:
    cap = _capture(9.0, 0.0)
    cap["runs"] = [{"duration_seconds": 1.0}, {"duration_seconds": 3.0}]
    baseline.record("r", cap)
    assert baseline.load("r").seconds == 2.0


def test_plain_capture_file_is_a_baseline(tmp_path: Path) -> None:
    path = tmp_path / "other-host.json"
    path.write_text(json.dumps(_capture(0.5, 0.02)))
    assert baseline.load(str(path)).seconds == 0.5


@pytest.mark.parametrize("text, unit, expected", [
    ("1.5\n2.5\n", "s", [1.5, 2.5]),
    ("# exokernel runs\n100\n300\n", "ms", [0.1, 0.3]),
    ("invocation,duration_ms\n1,100\n2,200\n", "s", [0.1, 0.2]),
    ("id,duration\na,2\nb,4\n", "s", [2.0, 4.0]),
])
def test_parse_durations(text: str, unit: str, expected: list[float]) -> None:
    assert baseline.parse_durations(text, "f", unit) == pytest.approx(expected)


def test_imported_baseline_round_trips(tmp_path: Path) -> None:
    src = tmp_path / "baremetal-os.csv"
    src.write_text("request,duration_ms\n1,10\n2,30\n")
    baseline.import_durations("bmos", src)
    loaded = baseline.load("bmos")
    assert loaded.kind == "imported" and loaded.seconds == pytest.approx(0.02)
    assert loaded.durations == pytest.approx((0.01, 0.03))


@pytest.mark.parametrize("text, message", [
    ("", "no durations"),
    ("1\nabc\n", "line 2: 'abc' is not a number"),
    ("name,size\na,1\n", "no duration column"),
    ("duration\n-1\n", "must be positive"),
    ("duration_ms\n5\nx\n", "line 3: column duration_ms 'x' is not a number"),
])
def test_malformed_durations_are_named(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        baseline.parse_durations(text, "durations.csv")


@pytest.mark.parametrize("body, message", [
    ({"version": 1, "kind": "recorded", "capture": "nope"}, "field 'capture' must be an object"),
    ({"version": 1, "kind": "imported", "durations_seconds": []}, "durations_seconds"),
    ({"version": 1, "kind": "weird"}, "field 'kind'"),
    ({"version": 7, "kind": "recorded"}, "field 'version' is 7"),
])
def test_malformed_baseline_file_gives_clear_error(tmp_path: Path, body: dict, message: str) -> None:  # type: ignore[type-arg]
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(body))
    with pytest.raises(ConfigError, match=message) as info:
        baseline.load(str(path))
    assert str(path) in str(info.value)


def test_unknown_and_bad_names() -> None:
    with pytest.raises(InputError, match="no baseline named 'nope'"):
        baseline.load("nope")
    with pytest.raises(InputError, match="built-in"):
        baseline.record("baremetal", _capture(1, 0))
    with pytest.raises(InputError, match="bad baseline name"):
        baseline.record("../etc/passwd", _capture(1, 0))
