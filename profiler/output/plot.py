"""Plots where a person would rather look than read (PNG or SVG, by extension)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any, Sequence

from profiler.errors import InputError
from profiler.figures import CATEGORIES, FIGURES, ONCPU, RUNQUEUE_WAIT, SYSCALL_BLOCKED, SYSCALL_TIME
from profiler.tax.result import ProfileResult

_COLORS = {
    "own work": "#4c956c", "syscalls": "#d1495b", "page_faults": "#edae49", "context_switches": "#00798c",
    "runqueue_wait": "#30638e", "interrupts": "#8d6a9f", "decompression": "#f4845f",
    "virtualization": "#6c757d", "observer": "#bbbbbb", "CPU-share wait": "#e9ecef",
    "blocked on the world": "#ced4da",
}


def check_plot_path(path: str | Path) -> Path:
    path = Path(path)
    if path.suffix.lower() not in (".png", ".svg"):
        raise InputError(f"{path}: plots are written as .png or .svg")
    return path


def _wall_segments(result: ProfileResult) -> list[tuple[str, float]]:
    """Parts of the mean invocation's billed wall time: they add up to the wall time."""
    tax = result.tax
    if tax is not None and tax.wall is not None:
        wall = tax.wall
        parts = [("own work", wall.own_work_seconds)]
        parts += [(c, tax.wall_by_category.get(c, 0.0)) for c in CATEGORIES]
        parts += [("observer", wall.observer_seconds), ("CPU-share wait", wall.waiting_share_seconds),
                  ("blocked on the world", wall.blocked_seconds)]
        return parts
    return _cpu_segments(result)


def _cpu_segments(result: ProfileResult) -> list[tuple[str, float]]:
    """Parts of the CPU time (and run-queue wait) summed over the workload's processes."""
    tax = result.tax
    if tax is not None:
        parts = [("own work", tax.own_work_seconds)]
        parts += [(c, tax.by_category.get(c, 0.0)) for c in CATEGORIES]
        parts.append(("observer", tax.observer_seconds))
        parts.append(("CPU-share wait", tax.cpu_share_wait_seconds))
        return parts
    c = result.workload.counters
    sys_cpu = float(c.value(SYSCALL_TIME)) - float(c.value(SYSCALL_BLOCKED))
    interrupts = sum(float(c.value(f)) for f in FIGURES if f.category == "interrupts")
    decomp = sum(s.ns for s in result.workload.decompression_by_library.values()) / 1e9
    oncpu = float(c.value(ONCPU))
    return [("own work", max(0.0, oncpu - sys_cpu - interrupts - decomp)), ("syscalls", sys_cpu),
            ("runqueue_wait", float(c.value(RUNQUEUE_WAIT))), ("interrupts", interrupts), ("decompression", decomp)]


def _bars(result: ProfileResult, label: str = "") -> list[tuple[str, list[tuple[str, float]]]]:
    """A wall-time bar (what is billed) and, when processes ran in parallel or
    waited, a CPU-time bar (summed over processes), each labelled as such."""
    rows = [(f"{label} wall time (billed)".strip(), _wall_segments(result))]
    if result.tax is not None and result.tax.wall is not None:
        rows.append((f"{label} CPU time, all processes".strip(), _cpu_segments(result)))
    return rows


def _save(fig: Any, path: Path) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=path.suffix, dir=path.parent or Path("."))
    os.close(fd)
    try:
        fig.savefig(tmp, format=path.suffix.lstrip(".").lower(), bbox_inches="tight", dpi=110)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _stacked_bars(ax: Any, rows: Sequence[tuple[str, list[tuple[str, float]]]]) -> None:
    seen: set[str] = set()
    for y, (label, parts) in enumerate(rows):
        left = 0.0
        for name, seconds in parts:
            ms = seconds * 1e3
            if ms <= 0:
                continue
            ax.barh(y, ms, left=left, color=_COLORS.get(name, "#999999"),
                    label=None if name in seen else name.replace("_", " "))
            seen.add(name)
            left += ms
    ax.set_yticks(range(len(rows)), [label for label, _ in rows])
    ax.set_xlabel("milliseconds per invocation")
    ax.invert_yaxis()
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.25), ncol=5, fontsize="small", frameon=False)


def plot_capture(result: ProfileResult, path: str | Path, title: str | None = None) -> None:
    """Tax breakdown of the mean invocation and, with several runs, the duration distribution."""
    path = check_plot_path(path)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = [r for r in result.runs if not r.warmup]
    panels = 2 if len(runs) >= 2 else 1
    fig, axes = plt.subplots(panels, 1, figsize=(9, 3.2 * panels + 0.6), squeeze=False)
    command = " ".join(result.command)
    fig.suptitle(title or f"fntax: {command[:80]}", fontsize="medium")
    _stacked_bars(axes[0][0], _bars(result))
    axes[0][0].set_title("the mean invocation: billed wall time, and CPU time summed over its processes "
                         "(each bar's parts add up to it)", fontsize="small")
    if panels == 2:
        ax = axes[1][0]
        durations = [r.duration_seconds * 1e3 for r in runs]
        ax.hist(durations, bins=min(30, max(5, len(durations) // 2)), color="#30638e", alpha=0.8)
        pct = result.percentiles.get("duration_seconds", {})
        for key, style in (("p20", ":"), ("p40", ":"), ("p60", ":"), ("p80", ":"), ("p99", "--"), ("mean", "-")):
            if key in pct:
                ax.axvline(float(pct[key]) * 1e3, color="#d1495b", linestyle=style, linewidth=1)
                ax.text(float(pct[key]) * 1e3, ax.get_ylim()[1] * 0.95, key, rotation=90, va="top",
                        fontsize="x-small")
        ax.set_xlabel("duration per run (ms)")
        ax.set_ylabel("runs")
        ax.set_title(f"duration distribution over {len(runs)} runs", fontsize="small")
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)


def plot_comparison(captures: Sequence[tuple[str, ProfileResult]], path: str | Path) -> None:
    """Side-by-side stacked bars of several captures."""
    path = check_plot_path(path)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [(label, _wall_segments(result)) for label, result in captures]
    fig, ax = plt.subplots(figsize=(9, 0.6 * len(rows) + 1.8))
    _stacked_bars(ax, rows)
    ax.set_title("billed wall time per invocation: own work, tax by category, waits", fontsize="medium")
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)
