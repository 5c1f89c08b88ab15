"""Plots where a person would rather look than read (PNG or SVG, by extension)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any, Mapping, Sequence

from profiler.errors import ConfigError, InputError
from profiler.tax.compute import CATEGORIES

_COLORS = {
    "own work": "#4c956c", "syscalls": "#d1495b", "page_faults": "#edae49", "context_switches": "#00798c",
    "runqueue_wait": "#30638e", "interrupts": "#8d6a9f", "decompression": "#f4845f",
    "virtualization": "#6c757d", "observer": "#bbbbbb", "CPU-share wait": "#e9ecef",
}


def check_plot_path(path: str | Path) -> Path:
    path = Path(path)
    if path.suffix.lower() not in (".png", ".svg"):
        raise InputError(f"{path}: plots are written as .png or .svg")
    return path


def _segments(data: Mapping[str, Any], source: str) -> list[tuple[str, float]]:
    """(label, seconds) parts of one mean invocation."""
    tax = data.get("tax")
    if isinstance(tax, Mapping):
        by_category = tax.get("by_category")
        if not isinstance(by_category, Mapping):
            raise ConfigError(f"{source}: missing field 'tax.by_category'")
        parts = [("own work", float(tax.get("own_work_seconds", 0.0)))]
        parts += [(c, float(by_category.get(c, 0.0))) for c in CATEGORIES]
        parts.append(("observer", float(tax.get("observer_seconds", 0.0))))
        parts.append(("CPU-share wait", float(tax.get("cpu_share_wait_seconds", 0.0))))
        return parts
    workload = data.get("workload")
    if not isinstance(workload, Mapping):
        raise ConfigError(f"{source}: missing field 'workload'")
    syscalls = workload.get("syscalls", {})
    sys_cpu = float(syscalls.get("seconds", 0.0)) - float(syscalls.get("blocked_seconds", 0.0))
    irq = workload.get("irq_seconds", {})
    decomp = float(workload.get("decompression", {}).get("seconds", 0.0))
    oncpu = float(workload.get("oncpu_seconds", 0.0))
    interrupts = float(irq.get("hard", 0.0)) + float(irq.get("soft", 0.0))
    return [("own work", max(0.0, oncpu - sys_cpu - interrupts - decomp)), ("syscalls", sys_cpu),
            ("runqueue_wait", float(workload.get("runqueue_wait_seconds", 0.0))),
            ("interrupts", interrupts), ("decompression", decomp)]


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


def plot_capture(data: Mapping[str, Any], path: str | Path, title: str | None = None) -> None:
    """Tax breakdown of the mean invocation and, with several runs, the duration distribution."""
    path = check_plot_path(path)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = [r for r in data.get("runs", []) if isinstance(r, Mapping) and not r.get("warmup")]
    panels = 2 if len(runs) >= 2 else 1
    fig, axes = plt.subplots(panels, 1, figsize=(9, 3.2 * panels + 0.6), squeeze=False)
    command = " ".join(map(str, data.get("command", [])))
    fig.suptitle(title or f"fntax: {command[:80]}", fontsize="medium")
    _stacked_bars(axes[0][0], [("mean invocation", _segments(data, str(path)))])
    axes[0][0].set_title("where the time goes (tax categories vs the function's own work)", fontsize="small")
    if panels == 2:
        ax = axes[1][0]
        durations = [float(r["duration_seconds"]) * 1e3 for r in runs]
        ax.hist(durations, bins=min(30, max(5, len(durations) // 2)), color="#30638e", alpha=0.8)
        pct = data.get("percentiles", {}).get("duration_seconds", {})
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


def plot_comparison(captures: Sequence[tuple[str, Mapping[str, Any]]], path: str | Path) -> None:
    """Side-by-side stacked bars of several captures."""
    path = check_plot_path(path)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [(label, _segments(data, label)) for label, data in captures]
    fig, ax = plt.subplots(figsize=(9, 0.6 * len(rows) + 1.8))
    _stacked_bars(ax, rows)
    ax.set_title("instruction tax per invocation", fontsize="medium")
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)
