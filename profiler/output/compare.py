"""Side-by-side comparison of captures (`fntax compare`, the demo's table)."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

from profiler.figures import (
    CATEGORIES,
    KVM_EXIT_TIME,
    KVM_EXITS,
    KVM_GUEST_TIME,
    KVM_USERSPACE_EXITS,
    KVM_USERSPACE_TIME,
    ONCPU,
    SYSCALLS,
    VCPU_WAIT,
    Figure,
)
from profiler.output.capture_json import read_capture
from profiler.output.report import fmt_seconds
from profiler.tax.result import ProfileResult
from profiler.tax.virtualization import exits_visible, has_kvm_activity

Loaded = Sequence[tuple[str, ProfileResult]]
Value = float | str | None


def load_for_comparison(paths: Sequence[str]) -> list[tuple[str, ProfileResult]]:
    """Each capture file with a short label (its file name without .json)."""
    return [(Path(p).name.removesuffix(".json"), read_capture(p)) for p in paths]


def _decompression_share(r: ProfileResult) -> float | None:
    """Decompression's share of the billed wall time, like the tax share beside it."""
    if r.tax is not None and r.tax.wall is not None and "decompression" in r.tax.wall_by_category:
        return r.tax.wall_by_category["decompression"] / r.tax.wall.wall_seconds if r.tax.wall.wall_seconds else None
    seconds = r.per_invocation(sum(s.ns for s in r.workload.decompression_by_library.values()) / 1e9)
    return seconds / r.duration_seconds if r.duration_seconds else None


Row = tuple[str, Callable[[ProfileResult], Value], str]  # label, getter, format


def _category_getter(category: str) -> Callable[[ProfileResult], Value]:
    return lambda r: r.tax.by_category.get(category) if r.tax else None


def _rows() -> list[Row]:
    rows: list[Row] = [
        ("duration", lambda r: r.duration_seconds, "s"),
        ("on-CPU", lambda r: r.per_invocation(float(r.workload.counters.value(ONCPU))), "s"),
        ("own work", lambda r: r.tax.own_work_seconds if r.tax else None, "s"),
        ("tax", lambda r: r.tax.seconds if r.tax else None, "s"),
    ]
    rows += [(f"  {c}", _category_getter(c), "s") for c in CATEGORIES]
    rows += [
        ("tax share", lambda r: r.tax.ratio if r.tax else None, "%"),  # of the billed wall time
        ("decompression share", _decompression_share, "%"),
        ("observer (fntax)", lambda r: r.tax.observer_seconds if r.tax else None, "s"),
        ("CPU-share wait", lambda r: r.tax.cpu_share_wait_seconds if r.tax else None, "s"),
        ("syscalls", lambda r: r.per_invocation(r.workload.counters[SYSCALLS]), "n"),
        ("memory MB", lambda r: r.cost.memory_mb if r.cost else None, "n"),
        ("$ per million", lambda r: r.cost.per_million_dollars if r.cost else None, "$"),
        ("  tax $ per million", lambda r: r.cost.tax_per_million_dollars if r.cost else None, "$"),
        ("baseline", lambda r: r.baseline.name if r.baseline else None, "str"),
        ("baseline duration", lambda r: r.baseline.seconds if r.baseline else None, "s"),
        ("baseline $ per million", lambda r: r.cost.baseline_per_million_dollars if r.cost else None, "$"),
    ]
    return rows + _kvm_rows()


def _kvm_getter(figure: Figure, needs_exits: bool = False) -> Callable[[ProfileResult], Value]:
    """A KVM figure per invocation; '-' for a capture with no VM, 'n/a' where this host cannot see it."""
    def get(r: ProfileResult) -> Value:
        c = r.workload.counters
        if not has_kvm_activity(c):
            return None
        if needs_exits and not exits_visible(c):
            return "n/a"
        return r.per_invocation(float(c.value(figure)))
    return get


def _kvm_rows() -> list[Row]:
    """A VM's own figures (shown when a capture is of a VM monitor)."""
    return [
        ("KVM exits", _kvm_getter(KVM_EXITS, True), "n"),
        ("  exit time", _kvm_getter(KVM_EXIT_TIME, True), "s"),
        ("exits to the VM monitor", _kvm_getter(KVM_USERSPACE_EXITS), "n"),
        ("  their time", _kvm_getter(KVM_USERSPACE_TIME), "s"),
        ("guest on CPU", _kvm_getter(KVM_GUEST_TIME), "s"),
        ("vCPU wait", _kvm_getter(VCPU_WAIT), "s"),
    ]


def _fmt(value: Value, kind: str) -> str:
    if value is None:
        return "-"
    if kind == "str" or isinstance(value, str):
        return str(value)
    if kind == "s":
        return fmt_seconds(value)
    if kind == "%":
        return f"{value * 100:.1f}%"
    if kind == "$":
        return f"${value:,.2f}"
    return f"{value:,.0f}"


def _delta(first: Value, last: Value, kind: str) -> str:
    if kind == "str" or first is None or last is None or isinstance(first, str) or isinstance(last, str):
        return ""
    diff = last - first
    sign = "+" if diff >= 0 else "-"
    if kind == "%":
        return f"{sign}{abs(diff) * 100:.1f} pt"
    return sign + _fmt(abs(diff), kind)


def render_comparison(loaded: Loaded) -> str:
    labels = [label for label, _ in loaded]
    table = [["", *labels, f"{labels[-1]} - {labels[0]}"]]
    for label, getter, kind in _rows():
        values = [getter(result) for _, result in loaded]
        if all(v is None for v in values):
            continue
        table.append([label, *(_fmt(v, kind) for v in values), _delta(values[0], values[-1], kind)])
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    return "\n".join(
        "  ".join(cell.ljust(widths[0]) if i == 0 else cell.rjust(widths[i]) for i, cell in enumerate(row)).rstrip()
        for row in table)
