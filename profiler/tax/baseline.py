"""Baselines: what the same work costs elsewhere.

* ``baremetal``: the built-in model (profiler.tax.compute.baremetal), nothing stored.
* recorded: a capture of the command made on a reference host
  (``fntax baseline record NAME -- CMD``), stored whole.
* imported: per-invocation durations measured on a system fntax cannot run on
  (an exokernel, a unikernel, another platform's logs).

Stored as versioned JSON files in the baseline directory (FNTAX_HOME or
/var/lib/fntax, then ``baselines/NAME.json``), written atomically.
"""

from __future__ import annotations

import csv
import io
import math
import os
import re
import statistics
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Mapping, Sequence

from profiler.errors import ConfigError, InputError
from profiler.files import make_private_dir, read_json, read_text, write_json_atomic

BASELINE_VERSION = 1
BUILTIN = "baremetal"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
# Durations at or above this many seconds (about 32 years) are refused as typos.
MAX_SECONDS = 1e9
_UNITS = {"s": 1.0, "ms": 1e-3, "us": 1e-6, "ns": 1e-9}


def state_dir() -> Path:
    return Path(os.environ.get("FNTAX_HOME", "/var/lib/fntax"))


def baseline_dir() -> Path:
    return state_dir() / "baselines"


@dataclass(frozen=True)
class Baseline:
    name: str
    kind: str  # "baremetal" | "recorded" | "imported"
    seconds: float  # mean duration of one invocation
    durations: tuple[float, ...]
    by_category: Mapping[str, float]  # tax seconds by category (recorded only)
    source: str  # where it came from: a file, a host


def check_name(name: str) -> None:
    if name == BUILTIN:
        raise InputError(f"'{BUILTIN}' is the built-in model; choose another name")
    if not _NAME.match(name):
        raise InputError(f"bad baseline name {name!r}: use letters, digits, '.', '_' or '-' (max 64)")


def _path(name: str) -> Path:
    return baseline_dir() / f"{name}.json"


def _save(name: str, body: dict[str, Any]) -> Path:
    check_name(name)
    make_private_dir(state_dir())
    make_private_dir(baseline_dir())
    path = _path(name)
    write_json_atomic(path, {"version": BASELINE_VERSION, "name": name,
                             "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                             **body})
    return path


def record(name: str, capture: Mapping[str, Any]) -> Path:
    """Store a capture (JSON form, with its tax block) as a recorded baseline."""
    return _save(name, {"kind": "recorded", "host": capture.get("host", {}), "capture": dict(capture)})


def parse_durations(text: str, source: str, unit: str = "s", column: str | None = None) -> list[float]:
    """Durations from one number per line, or CSV with a header naming the column.

    A header column named duration_ms / duration_us / duration_s sets its unit."""
    if unit not in _UNITS:
        raise ConfigError(f"{source}: unknown unit {unit!r} (use s, ms, us or ns)")
    lines = [line for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    if not lines:
        raise ConfigError(f"{source}: no durations found")
    scale = _UNITS[unit]
    first = lines[0].split(",")
    if len(first) == 1 and _is_number(first[0]) and column is None:
        values = []
        for number, line in enumerate(lines, 1):
            if not _is_number(line):
                raise ConfigError(f"{source}: line {number}: {_short(line.strip())} is not a number")
            values.append(float(line) * scale)
    else:
        try:
            values = _csv_durations(lines, source, scale, column)
        except csv.Error as err:  # a NUL byte, a field past csv's size limit
            raise ConfigError(f"{source}: not a durations CSV ({err})") from err
    if not all(_positive(v) for v in values):
        raise ConfigError(f"{source}: durations must be positive numbers of seconds below {MAX_SECONDS:g}")
    return values


def _csv_durations(lines: list[str], source: str, scale: float, column: str | None) -> list[float]:
    reader = csv.DictReader(io.StringIO("\n".join(lines)))
    header = [h.strip() for h in (reader.fieldnames or [])]
    wanted = column or next((h for h in header if h.lower().startswith("duration")), None)
    if wanted is None or wanted not in header:
        raise ConfigError(f"{source}: CSV header has no {'column ' + repr(column) if column else 'duration column'}"
                          f" (columns: {_short(', '.join(header), 80)})")
    for suffix, factor in (("_ms", 1e-3), ("_us", 1e-6), ("_ns", 1e-9), ("_s", 1.0), ("_seconds", 1.0)):
        if wanted.lower().endswith(suffix):
            scale = factor
    values = []
    for number, row in enumerate(reader, 2):
        cell = (row.get(wanted) or "").strip()
        if not _is_number(cell):
            raise ConfigError(f"{source}: line {number}: column {_short(wanted)[1:-1]} {_short(cell)} is not a number")
        values.append(float(cell) * scale)
    return values


def _short(value: Any, limit: int = 40) -> str:
    quoted = repr(value)
    return quoted if len(quoted) <= limit else quoted[: limit - 3] + "..."


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return text.strip().lower() not in ("nan", "inf", "-inf", "infinity")


def import_durations(name: str, durations_file: str | Path, unit: str = "s", column: str | None = None) -> Path:
    path = Path(durations_file)
    text = read_text(path, "durations file (text: one number per line, or CSV)")
    values = parse_durations(text, str(path), unit, column)
    return _save(name, {"kind": "imported", "source": str(path), "durations_seconds": values})


def load(name_or_file: str) -> Baseline:
    """A stored baseline by name, or a baseline/capture file by path."""
    path = Path(name_or_file)
    if not path.exists():
        if os.sep in name_or_file or name_or_file.endswith(".json"):
            raise InputError(f"{name_or_file}: no such baseline file")
        path = _path(name_or_file)
        if not path.exists():
            raise InputError(f"no baseline named {name_or_file!r} (see `fntax baseline list`)")
    data = read_json(path)
    source = str(path)
    if "kind" not in data and "workload" in data:  # a plain capture file
        return _from_capture(path.stem, data, source)
    version = data.get("version")
    if isinstance(version, bool) or version != BASELINE_VERSION:
        raise ConfigError(f"{source}: field 'version' is {_short(data.get('version'))}, "
                          f"expected {BASELINE_VERSION}")
    kind = data.get("kind")
    name = data.get("name")
    name = name if isinstance(name, str) and _NAME.match(name) else path.stem
    if kind == "recorded":
        capture = data.get("capture")
        if not isinstance(capture, dict):
            raise ConfigError(f"{source}: field 'capture' must be an object")
        return _from_capture(name, capture, source)
    if kind == "imported":
        raw = data.get("durations_seconds")
        if not isinstance(raw, list) or not raw or not all(_positive(v) for v in raw):
            raise ConfigError(f"{source}: field 'durations_seconds' must be a non-empty list of positive numbers")
        durations = tuple(float(v) for v in raw)
        return Baseline(name=name, kind="imported", seconds=statistics.fmean(durations),
                        durations=durations, by_category={}, source=source)
    raise ConfigError(f"{source}: field 'kind' is {_short(kind)}, expected 'recorded' or 'imported'")


def _finite(value: Any) -> bool:
    """A JSON number that is neither NaN, infinite, nor an integer past the float range."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


def _positive(value: Any) -> bool:
    """A usable duration: positive and below MAX_SECONDS (a mean of such never overflows)."""
    return _finite(value) and 0 < value < MAX_SECONDS


def _seconds_field(value: Any, source: str, field: str) -> float:
    if not _positive(value):
        raise ConfigError(f"{source}: field '{field}' must be a positive number of seconds")
    return float(value)


def _from_capture(name: str, capture: Mapping[str, Any], source: str) -> Baseline:
    runs = capture.get("runs") or []
    if not isinstance(runs, list):
        raise ConfigError(f"{source}: field 'runs' must be a list")
    durations = []
    for i, run in enumerate(runs):
        if not isinstance(run, Mapping):
            raise ConfigError(f"{source}: field 'runs[{i}]' must be an object")
        durations.append(_seconds_field(run.get("duration_seconds"), source, f"runs[{i}].duration_seconds"))
    if not durations:
        workload = capture.get("workload")
        if not isinstance(workload, Mapping):
            raise ConfigError(f"{source}: field 'workload' must be an object")
        durations.append(_seconds_field(workload.get("wall_seconds"), source, "workload.wall_seconds"))
    tax = capture.get("tax") or {}
    categories = tax.get("by_category") or {} if isinstance(tax, Mapping) else None
    if not isinstance(categories, Mapping):
        raise ConfigError(f"{source}: field 'tax.by_category' must be an object")
    by_category = {}
    for key, value in categories.items():
        if not _finite(value):
            raise ConfigError(f"{source}: field 'tax.by_category.{str(key)[:40]}' must be a number")
        by_category[str(key)] = float(value)
    return Baseline(name=name, kind="recorded", seconds=statistics.fmean(durations),
                    durations=tuple(durations), by_category=by_category, source=source)


def list_baselines() -> list[dict[str, Any]]:
    """One row per stored baseline (bad files listed with their problem)."""
    rows: list[dict[str, Any]] = [{"name": BUILTIN, "kind": "model", "created": "-", "seconds": None,
                                   "detail": "single address space, ring 0, mono-tasking"}]
    directory = baseline_dir()
    if not directory.is_dir():
        return rows
    for path in sorted(directory.glob("*.json")):
        try:
            b = load(str(path))
            created = str(read_json(path).get("created", "-"))
            rows.append({"name": path.stem, "kind": b.kind, "created": created,
                         "seconds": b.seconds, "detail": f"{len(b.durations)} run(s)"})
        except (ConfigError, InputError) as err:
            rows.append({"name": path.stem, "kind": "invalid", "created": "-", "seconds": None,
                         "detail": str(err)})
    return rows


def compare_rows(a_tax: Mapping[str, float], b_tax: Mapping[str, float],
                 categories: Sequence[str]) -> list[tuple[str, float, float, float]]:
    """(category, A seconds, B seconds, B - A) for each category."""
    return [(c, a_tax.get(c, 0.0), b_tax.get(c, 0.0), b_tax.get(c, 0.0) - a_tax.get(c, 0.0))
            for c in categories]
