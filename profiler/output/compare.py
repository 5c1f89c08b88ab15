"""Side-by-side comparison of captures (`fntax compare`, the demo's table)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from profiler.files import read_json
from profiler.output.report import CAPTURE_VERSION, _fmt_s
from profiler.tax.compute import CATEGORIES

Loaded = Sequence[tuple[str, Mapping[str, Any]]]


def load_for_comparison(paths: Sequence[str]) -> list[tuple[str, dict[str, Any]]]:
    """Each capture file with a short label (its file name without .json)."""
    return [(Path(p).name.removesuffix(".json"), read_json(p, expect_version=CAPTURE_VERSION)) for p in paths]


def _dig(data: Mapping[str, Any], *keys: str) -> Any:
    value: Any = data
    for key in keys:
        if not isinstance(value, Mapping) or key not in value:
            return None
        value = value[key]
    return value


def _duration(data: Mapping[str, Any]) -> float | None:
    mean = _dig(data, "percentiles", "duration_seconds", "mean")
    return float(mean) if mean is not None else _dig(data, "workload", "wall_seconds")


def _per_invocation(data: Mapping[str, Any], *keys: str) -> float | None:
    """A workload total divided by the number of invocations it sums."""
    value = _dig(data, "workload", *keys)
    return None if value is None else float(value) / max(1, int(data.get("invocations", 1)))


def _decompression_share(data: Mapping[str, Any]) -> float | None:
    seconds = _per_invocation(data, "decompression", "seconds")
    duration = _duration(data)
    return None if seconds is None or not duration else seconds / duration


Row = tuple[str, Callable[[Mapping[str, Any]], Any], str]  # label, getter, format


def _category_getter(category: str) -> Callable[[Mapping[str, Any]], Any]:
    return lambda data: _dig(data, "tax", "by_category", category)


def _rows() -> list[Row]:
    rows: list[Row] = [
        ("duration", _duration, "s"),
        ("on-CPU", lambda d: _per_invocation(d, "oncpu_seconds"), "s"),
        ("own work", lambda d: _dig(d, "tax", "own_work_seconds"), "s"),
        ("tax", lambda d: _dig(d, "tax", "seconds"), "s"),
    ]
    rows += [(f"  {c}", _category_getter(c), "s") for c in CATEGORIES]
    rows += [
        ("tax share", lambda d: _dig(d, "tax", "ratio"), "%"),
        ("decompression share", _decompression_share, "%"),
        ("observer (fntax)", lambda d: _dig(d, "tax", "observer_seconds"), "s"),
        ("CPU-share wait", lambda d: _dig(d, "tax", "cpu_share_wait_seconds"), "s"),
        ("syscalls", lambda d: _per_invocation(d, "syscalls", "count"), "n"),
        ("memory MB", lambda d: _dig(d, "cost", "memory_mb"), "n"),
        ("$ per million", lambda d: _dig(d, "cost", "per_million_dollars"), "$"),
        ("  tax $ per million", lambda d: _dig(d, "cost", "tax_per_million_dollars"), "$"),
        ("baseline", lambda d: _dig(d, "baseline", "name"), "str"),
        ("baseline duration", lambda d: _dig(d, "baseline", "seconds"), "s"),
        ("baseline $ per million", lambda d: _dig(d, "cost", "baseline_per_million_dollars"), "$"),
    ]
    return rows


def _fmt(value: Any, kind: str) -> str:
    if value is None:
        return "-"
    if kind == "s":
        return _fmt_s(float(value))
    if kind == "%":
        return f"{float(value) * 100:.1f}%"
    if kind == "$":
        return f"${float(value):,.2f}"
    if kind == "n":
        return f"{float(value):,.0f}"
    return str(value)


def _delta(first: Any, last: Any, kind: str) -> str:
    if kind == "str" or first is None or last is None:
        return ""
    diff = float(last) - float(first)
    sign = "+" if diff >= 0 else "-"
    if kind == "%":
        return f"{sign}{abs(diff) * 100:.1f} pt"
    return sign + _fmt(abs(diff), kind)


def render_comparison(loaded: Loaded) -> str:
    labels = [label for label, _ in loaded]
    table = [["", *labels, f"{labels[-1]} - {labels[0]}"]]
    for label, getter, kind in _rows():
        values = [getter(data) for _, data in loaded]
        if all(v is None for v in values):
            continue
        table.append([label, *(_fmt(v, kind) for v in values), _delta(values[0], values[-1], kind)])
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    return "\n".join(
        "  ".join(cell.ljust(widths[0]) if i == 0 else cell.rjust(widths[i]) for i, cell in enumerate(row)).rstrip()
        for row in table)
