"""Host calibration: per-event costs the kernel does not let fntax time directly.

Microbenchmarks (profiler/tax/calib/microbench.c, compiled here with gcc) measure
a minor page fault, a direct context switch, a syscall's entry and exit, a
function call and a clock read. Each figure is the median of repeated runs,
with its spread; the result is saved per host and reused by captures until
the kernel or CPU changes (or `fntax calibrate --refresh`).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import statistics
import subprocess
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Mapping

from profiler.errors import ConfigError, EnvironmentProblem
from profiler.files import make_private_dir, read_json, write_json_atomic
from profiler.system.host import cpu_model
from profiler.tax.compute import HostCosts

# 2: lower-quartile costs and interquartile spreads (1 held medians and min/max spreads).
CALIBRATION_VERSION = 2
DEFAULT_PATH = Path(os.environ.get("FNTAX_HOME", "/var/lib/fntax")) / "calibration.json"
FIGURES: tuple[str, ...] = ("page_fault_minor", "context_switch", "syscall", "function_call", "clock_read")
SOURCE = Path(__file__).resolve().parent / "calib" / "microbench.c"


@dataclass(frozen=True)
class Figure:
    seconds: float  # lower quartile of the rounds, per event
    min: float
    max: float
    spread: float  # interquartile range / median
    runs: int


@dataclass(frozen=True)
class Calibration:
    kernel: str
    cpu_model: str
    cpus: int
    date: str
    figures: Mapping[str, Figure]

    def cost(self, name: str) -> float:
        return self.figures[name].seconds

    def matches_host(self) -> bool:
        return self.kernel == os.uname().release and self.cpu_model == cpu_model()


def _binary() -> Path:
    """Compile the microbenchmarks once per source version."""
    if shutil.which("gcc") is None:
        raise EnvironmentProblem("calibration needs gcc (apt-get install gcc)")
    digest = hashlib.sha256(SOURCE.read_bytes()).hexdigest()[:12]
    cache = Path(os.environ.get("FNTAX_HOME", "/var/lib/fntax")) / "cache"
    make_private_dir(cache)
    binary = cache / f"microbench-{digest}"
    if not binary.exists():
        tmp = binary.with_suffix(".tmp")
        result = subprocess.run(["gcc", "-O2", "-o", str(tmp), str(SOURCE)], capture_output=True, text=True)
        if result.returncode != 0:
            raise EnvironmentProblem(f"cannot compile {SOURCE.name}: {result.stderr.strip().splitlines()[-1:]}")
        os.replace(tmp, binary)
    return binary


# A figure whose interquartile range exceeds this share of its median is
# measured again with more rounds; still that wide, it is flagged wherever an
# estimate rests on it.
WIDE_SPREAD = 0.5
EXTRA_ROUNDS = 14


def _pin_to_last_cpu() -> None:
    """Run the microbenchmarks on one CPU: no migrations between rounds."""
    cpus = sorted(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {cpus[-1]})


def _rounds(binary: Path, count: int, samples: dict[str, list[float]], say: Callable[[str], None],
            done: int) -> None:
    for run in range(count):
        say(f"calibrating: round {done + run + 1}")
        out = subprocess.run([str(binary)], capture_output=True, text=True, timeout=120,
                             preexec_fn=_pin_to_last_cpu)
        if out.returncode != 0:
            raise EnvironmentProblem(f"calibration microbenchmark failed (exit {out.returncode})")
        values = json.loads(out.stdout)
        for name in FIGURES:
            samples[name].append(float(values[name]) / 1e9)


def _figure(values: list[float]) -> Figure:
    """The lower quartile of the rounds: interference (another task, an
    interrupt) only ever adds time, so the quieter rounds say what the
    event costs; the spread is the interquartile range over the median."""
    q1, median, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return Figure(seconds=q1, min=min(values), max=max(values),
                  spread=(q3 - q1) / median if median > 0 else 0.0, runs=len(values))


def run_calibration(repeats: int = 7, progress: Callable[[str], None] | None = None) -> Calibration:
    say = progress or (lambda _m: None)
    binary = _binary()
    samples: dict[str, list[float]] = {name: [] for name in FIGURES}
    _rounds(binary, repeats, samples, say, 0)
    if any(_figure(values).spread > WIDE_SPREAD for values in samples.values()):
        _rounds(binary, EXTRA_ROUNDS, samples, say, repeats)
    figures = {name: _figure(values) for name, values in samples.items()}
    return Calibration(kernel=os.uname().release, cpu_model=cpu_model(), cpus=os.cpu_count() or 1,
                       date=datetime.now(timezone.utc).isoformat(timespec="seconds"), figures=figures)


def save_calibration(cal: Calibration, path: Path = DEFAULT_PATH) -> None:
    make_private_dir(path.parent)
    write_json_atomic(path, {
        "version": CALIBRATION_VERSION, "kernel": cal.kernel, "cpu_model": cal.cpu_model, "cpus": cal.cpus,
        "date": cal.date,
        "figures": {name: {"seconds": f.seconds, "min": f.min, "max": f.max, "spread": f.spread, "runs": f.runs}
                    for name, f in cal.figures.items()},
    })


def _number(data: Mapping[str, Any], key: str, where: str) -> float:
    value = data.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{where}: field '{key}' must be a number")
    return float(value)


def load_calibration(path: Path = DEFAULT_PATH) -> Calibration:
    data = read_json(path, expect_version=CALIBRATION_VERSION)
    for key in ("kernel", "cpu_model", "date"):
        if not isinstance(data.get(key), str):
            raise ConfigError(f"{path}: field '{key}' must be a string")
    raw = data.get("figures")
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: field 'figures' must be an object")
    figures = {}
    for name in FIGURES:
        entry = raw.get(name)
        where = f"{path}: figures.{name}"
        if not isinstance(entry, dict):
            raise ConfigError(f"{where}: missing")
        seconds = _number(entry, "seconds", where)
        if seconds <= 0:
            raise ConfigError(f"{where}: field 'seconds' must be positive")
        figures[name] = Figure(seconds=seconds, min=_number(entry, "min", where), max=_number(entry, "max", where),
                               spread=_number(entry, "spread", where), runs=int(_number(entry, "runs", where)))
    return Calibration(kernel=data["kernel"], cpu_model=data["cpu_model"], cpus=int(data.get("cpus", 1)),
                       date=data["date"], figures=figures)


def ensure_calibration(path: Path = DEFAULT_PATH, refresh: bool = False,
                       progress: Callable[[str], None] | None = None) -> Calibration:
    """This host's calibration: reused when it matches the kernel and CPU, else measured and saved."""
    if not refresh and path.exists():
        stored = read_json(path)
        # A calibration of another format version is measured again, not refused.
        if stored.get("version") == CALIBRATION_VERSION:
            cal = load_calibration(path)
            if cal.matches_host():
                return cal
    if progress:
        progress(f"calibrating this host (saved to {path}; `fntax calibrate --refresh` redoes it)")
    cal = run_calibration(progress=progress)
    save_calibration(cal, path)
    return cal


def render_calibration(cal: Calibration) -> str:
    lines = [f"host calibration: kernel {cal.kernel}, {cal.cpu_model}, {cal.cpus} CPUs, {cal.date}",
             f"{'figure':<18} {'cost':>12} {'min':>12} {'max':>12} {'spread':>8}"]
    for name in FIGURES:
        f = cal.figures[name]
        lines.append(f"{name:<18} {f.seconds * 1e9:>9.1f} ns {f.min * 1e9:>9.1f} ns {f.max * 1e9:>9.1f} ns"
                     f" {f.spread * 100:>7.0f}%" + ("  UNSTEADY: estimates using it are flagged"
                                                     if f.spread > WIDE_SPREAD else ""))
    lines.append("(cost: the lower quartile of the rounds; spread: interquartile range / median)")
    return "\n".join(lines)


def host_costs(calibration: Calibration) -> HostCosts:
    """The calibrated per-event costs the tax model uses."""
    return HostCosts(page_fault_minor=calibration.cost("page_fault_minor"),
                     context_switch=calibration.cost("context_switch"),
                     syscall=calibration.cost("syscall"),
                     function_call=calibration.cost("function_call"),
                     unsteady=tuple(name for name, f in calibration.figures.items() if f.spread > WIDE_SPREAD))
