"""A capture as a readable table (`fntax profile`, `fntax report`).

The counter rows come from the figure table: figures that share a JSON group
share a row, each shown through its own text template.
"""

from __future__ import annotations

from profiler.figures import CATEGORIES, FIGURES, KVM_EXIT_TIME, KVM_EXITS, KVM_FIGURES, ROW_TITLES, Unit
from profiler.model import Capture, Counters
from profiler.tax.result import ProfileResult
from profiler.tax.virtualization import exits_visible, has_kvm_activity

PERCENTILE_KEYS = ("p20", "p40", "p60", "p80", "p99", "mean")


def fmt_seconds(seconds: float) -> str:
    if seconds >= 1:
        return f"{seconds:.3f} s"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.3f} ms"
    return f"{seconds * 1e6:.1f} us"


def _counter_rows(counters: Counters) -> list[tuple[str, str]]:
    rows: dict[str, list[str]] = {}
    kvm = has_kvm_activity(counters)
    for figure, raw in counters.items():
        if figure in KVM_FIGURES and not kvm:
            continue  # no VM here: no KVM row
        if figure in (KVM_EXITS, KVM_EXIT_TIME) and kvm and not exits_visible(counters):
            if figure is KVM_EXITS:  # not measurable here: said, not shown as zeros
                rows.setdefault(figure.json[0], []).append(
                    "exits n/a (kvm_exit silent on this host: virtualization tax partial);")
            continue
        value = figure.value(raw)
        shown = fmt_seconds(float(value)) if figure.unit is Unit.NANOSECONDS else f"{int(value):,}"
        rows.setdefault(figure.json[0], []).append(figure.text.format(shown))
    return [(ROW_TITLES.get(group, group.replace("_", " ")), " ".join(parts)) for group, parts in rows.items()]


def render_table(capture: Capture, top_syscalls: int = 8) -> str:
    """A bare capture's table (no analysis)."""
    return render(ProfileResult(
        command=capture.command, pid=capture.pid, exit_code=capture.exit_code, interrupted=capture.interrupted,
        host=capture.host, workload=capture.workload, per_process=capture.per_process,
        map_update_failures=capture.map_update_failures), top_syscalls)


def render(result: ProfileResult, top_syscalls: int = 8) -> str:
    """A readable summary of a capture."""
    w = result.workload
    decomp = w.decompression_by_library
    rows: list[tuple[str, str]] = [
        ("command", " ".join(result.command)),
        ("exit code", "-" if result.exit_code is None else str(result.exit_code)),
        ("host", f"{result.host.kernel}, {result.host.cpus} CPUs, headers {result.host.headers}"),
        *([("invocations", f"{result.invocations} (the counts below are totals over them)")]
          if result.invocations > 1 else []),
        ("wall time", fmt_seconds(w.wall_seconds)),
        ("processes", str(w.processes)),
        *_counter_rows(w.counters),
        ("decompression", f"{sum(s.count for s in decomp.values()):,} calls in "
                          f"{fmt_seconds(sum(s.ns for s in decomp.values()) / 1e9)}"),
    ]
    for lib, stats in sorted(decomp.items(), key=lambda item: -item[1].ns):
        rows.append((f"  {lib}", f"{stats.count:,} calls in {fmt_seconds(stats.ns / 1e9)}"))
    width = max(len(label) for label, _ in rows)
    lines = [f"{label:<{width}}  {value}" for label, value in rows]
    top = sorted(w.syscalls_by_name.items(), key=lambda item: (-item[1].ns, item[0]))[:top_syscalls]
    if top:
        lines.append("")
        lines.append(f"{'syscall':<16} {'count':>10} {'time':>12}")
        for name, stats in top:
            lines.append(f"{name:<16} {stats.count:>10,} {fmt_seconds(stats.ns / 1e9):>12}")
    lines.extend(_analysis_lines(result))
    failures = {k: v for k, v in result.map_update_failures.items() if v}
    if failures:
        lines.append("")
        lines.append("WARNING: map updates failed (maps full), figures are low: "
                     + ", ".join(f"{k}={v}" for k, v in failures.items()))
    skipped = {k: v for k, v in result.probe_misses.items() if v}
    if skipped:
        lines.append("")
        lines.append("WARNING: the kernel skipped probe runs (another tracing program ran on that CPU, "
                     "or a switch it never showed), figures may be off: " + ", ".join(f"{k}={v}" for k, v in skipped.items()))
    if result.interrupted:
        lines.append("")
        lines.append("(capture interrupted: figures cover the run up to the signal)")
    return "\n".join(lines)


def _analysis_lines(result: ProfileResult) -> list[str]:
    """Tax, baseline, cost and percentile sections, when the capture has them."""
    tax = result.tax
    if tax is None:
        return []
    cpu_share = f"; {tax.cpu_ratio * 100:.1f}% of the CPU time used" if tax.cpu_ratio is not None else ""
    lines = ["", f"instruction tax per invocation: {fmt_seconds(tax.seconds)}"
                 f" ({tax.ratio * 100:.1f}% of the billed wall time{cpu_share})"]
    wall = tax.wall
    if wall is not None:
        how = "" if wall.measured else " (no timeline: scaled from the CPU view)"
        lines.append(f"wall time {fmt_seconds(wall.wall_seconds)}{how}: busy {fmt_seconds(wall.busy_seconds)},"
                     f" waiting for a CPU {fmt_seconds(wall.waiting_cpu_seconds)},"
                     f" held by the CPU quota {fmt_seconds(wall.waiting_share_seconds)},"
                     f" blocked on the world {fmt_seconds(wall.blocked_seconds)}")
    lines.append(f"  {'':<18} {'CPU time':>12} {'wall time':>12}   (CPU time: summed over processes;"
                 " wall time: billed)")

    def cells(label: str, cpu: float | None, wall_part: float | None, note: str = "") -> str:
        shown = "".join(f" {fmt_seconds(v) if v is not None else '-':>12}" for v in (cpu, wall_part))
        return f"  {label:<18}{shown}{note}"

    lines.append(cells("own work", tax.own_work_seconds, wall.own_work_seconds if wall else None))
    for name in CATEGORIES:
        marks = []
        if name in tax.estimated:
            marks.append("estimated")
        if name in tax.unsteady:
            marks.append("calibration spread wide")
        lines.append(cells(name, tax.by_category.get(name, 0.0), tax.wall_by_category.get(name),
                         f"  ({', '.join(marks)})" if marks else ""))
    lines.append(cells("observer (fntax)", tax.observer_seconds, wall.observer_seconds if wall else None,
                     "  (not counted as tax)"))
    if tax.cpu_share_wait_seconds or (wall and wall.waiting_share_seconds):
        lines.append(cells("CPU-share wait", tax.cpu_share_wait_seconds, wall.waiting_share_seconds if wall else None,
                         "  (held at the cgroup quota: the share bought, not tax)"))
    if wall is not None:
        lines.append(cells("blocked on world", None, wall.blocked_seconds, "  (every process asleep)"))
    if tax.estimate_scale < 1:
        lines.append(f"NOTE: the estimated categories exceeded the measured CPU time and were scaled by "
                     f"{tax.estimate_scale:.2f} to fit it")
    if tax.cgroup_throttled_seconds is not None:
        lines.append(f"(cgroup cpu.stat: {fmt_seconds(tax.cgroup_throttled_seconds)} throttled, summed over the"
                     " group's per-CPU run queues)")
    base = result.baseline
    if base is not None:
        speedup = base.speedup
        lines.append("")
        at_share = f" at the CPU share bought ({base.cpu_share:g} CPU)" if base.cpu_share else ""
        lines.append(f"baseline {base.name} ({base.kind}): {fmt_seconds(base.seconds)} per invocation{at_share}"
                     + (f", {speedup:.2f}x faster than here" if speedup and speedup >= 1 else
                        f", {1 / speedup:.2f}x slower than here" if speedup else ""))
        if base.whole_cpu_seconds is not None and base.cpu_share:
            lines.append(f"  at a whole CPU (quota lifted): {fmt_seconds(base.whole_cpu_seconds)}")
        if base.parallelism is not None and base.parallelism > 1.05:
            lines.append(f"  (the same work on {base.parallelism:.2f} cores at once, as it ran here)")
    cost = result.cost
    if cost is not None:
        lines.append("")
        lines.append(f"cost at {cost.memory_mb} MB ({result.prices or '?'} prices):"
                     f" billed {fmt_seconds(cost.billed_seconds)},"
                     f" ${cost.per_million_dollars:.2f} per million invocations,"
                     f" of which tax ${cost.tax_per_million_dollars:.2f};"
                     f" baseline ${cost.baseline_per_million_dollars:.2f}")
    if result.percentiles and result.invocations > 1:
        lines.append("")
        lines.append(f"{'over ' + str(result.invocations) + ' runs':<24}"
                     + "".join(f"{k:>11}" for k in PERCENTILE_KEYS))
        for name, row in result.percentiles.items():
            if name not in ("duration_seconds", "tax_seconds") and not any(row.values()):
                continue
            lines.append(f"{name.removesuffix('_seconds'):<24}"
                         + "".join(f"{fmt_seconds(row.get(k, 0.0)):>11}" for k in PERCENTILE_KEYS))
    return lines
