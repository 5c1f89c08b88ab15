"""Captures as JSON (version 1) and as a readable table."""

from __future__ import annotations

from typing import Any, Mapping

from profiler.errors import ConfigError
from profiler.model import NS_PER_SECOND, CallStats, Capture, Counters, ProcessSample

CAPTURE_VERSION = 1


def _seconds(ns: int) -> float:
    return ns / NS_PER_SECOND


def _calls_json(table: Mapping[str, CallStats], with_cpu: bool = False) -> dict[str, dict[str, float | int]]:
    ordered = sorted(table.items(), key=lambda item: (-item[1].ns, item[0]))
    return {name: {"count": stats.count, "seconds": _seconds(stats.ns),
                   **({"cpu_seconds": _seconds(stats.cpu_ns)} if with_cpu else {})}
            for name, stats in ordered}


def counters_json(counters: Counters, syscalls: Mapping[str, CallStats],
                  decompression: Mapping[str, CallStats]) -> dict[str, Any]:
    """The counter block shared by the workload and each process."""
    decomp_ns = sum(s.ns for s in decompression.values())
    decomp_calls = sum(s.count for s in decompression.values())
    decomp_cpu_ns = sum(s.cpu_ns for s in decompression.values())
    return {
        "oncpu_seconds": _seconds(counters.oncpu_ns),
        "syscalls": {
            "count": counters.syscalls,
            "seconds": _seconds(counters.syscall_ns),
            "blocked_seconds": _seconds(counters.syscall_offcpu_ns),
            "by_name": _calls_json(syscalls),
        },
        "context_switches": {"voluntary": counters.voluntary_switches,
                             "involuntary": counters.involuntary_switches},
        "runqueue_wait_seconds": _seconds(counters.runqueue_ns),
        "page_faults": {"minor": counters.faults_minor, "major": counters.faults_major,
                        "user": counters.faults_user, "kernel": counters.faults_kernel},
        "irq_seconds": {"hard": _seconds(counters.hardirq_ns), "soft": _seconds(counters.softirq_ns)},
        "decompression": {"seconds": _seconds(decomp_ns), "cpu_seconds": _seconds(decomp_cpu_ns),
                          "calls": decomp_calls, "by_library": _calls_json(decompression, with_cpu=True)},
    }


def _process_json(proc: ProcessSample) -> dict[str, Any]:
    return {"pid": proc.pid, "comm": proc.comm, "exited": proc.exited,
            **counters_json(proc.counters, proc.syscalls_by_name, proc.decompression_by_library)}


def capture_json(capture: Capture) -> dict[str, Any]:
    workload = capture.workload
    return {
        "version": CAPTURE_VERSION,
        "command": list(capture.command),
        "pid": capture.pid,
        "exit_code": capture.exit_code,
        "interrupted": capture.interrupted,
        "host": {"kernel": capture.host.kernel, "cpus": capture.host.cpus,
                 "headers": capture.host.headers, "cpu_model": capture.host.cpu_model},
        "workload": {
            "wall_seconds": workload.wall_seconds,
            "processes": workload.processes,
            **counters_json(workload.counters, workload.syscalls_by_name,
                            workload.decompression_by_library),
        },
        "per_process": [_process_json(p) for p in capture.per_process],
        "map_update_failures": dict(capture.map_update_failures),
    }


def _fmt_s(seconds: float) -> str:
    if seconds >= 1:
        return f"{seconds:.3f} s"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.3f} ms"
    return f"{seconds * 1e6:.1f} us"


def render_table(capture: Capture, top_syscalls: int = 8) -> str:
    """A readable summary of one capture."""
    return render_capture_json(capture_json(capture), top_syscalls)


def _get(data: Mapping[str, Any], dotted: str, source: str) -> Any:
    value: Any = data
    for part in dotted.split("."):
        if not isinstance(value, Mapping) or part not in value:
            raise ConfigError(f"{source}: missing field '{dotted}'")
        value = value[part]
    return value


def render_capture_json(data: Mapping[str, Any], top_syscalls: int = 8, source: str = "capture") -> str:
    """A readable summary of a capture in its JSON form (also `fntax report`)."""
    w = _get(data, "workload", source)
    host = _get(data, "host", source)
    sc = _get(w, "syscalls", source)
    cs = _get(w, "context_switches", source)
    pf = _get(w, "page_faults", source)
    irq = _get(w, "irq_seconds", source)
    dec = _get(w, "decompression", source)
    exit_code = data.get("exit_code")
    rows: list[tuple[str, str]] = [
        ("command", " ".join(map(str, data.get("command", [])))),
        ("exit code", "-" if exit_code is None else str(exit_code)),
        ("host", f"{host.get('kernel', '?')}, {host.get('cpus', '?')} CPUs, headers {host.get('headers', '?')}"),
        *([("invocations", f"{data['invocations']} (the counts below are totals over them)")]
          if data.get("invocations", 1) > 1 else []),
        ("wall time", _fmt_s(_get(w, "wall_seconds", source))),
        ("on-CPU time", _fmt_s(_get(w, "oncpu_seconds", source))),
        ("processes", str(_get(w, "processes", source))),
        ("syscalls", f"{sc['count']:,} in {_fmt_s(sc['seconds'])}"
                     f" ({_fmt_s(sc.get('blocked_seconds', 0.0))} blocked)"),
        ("context switches", f"{cs['voluntary']:,} voluntary, {cs['involuntary']:,} involuntary"),
        ("run-queue wait", _fmt_s(_get(w, "runqueue_wait_seconds", source))),
        ("page faults", f"{pf['minor']:,} minor, {pf['major']:,} major"
                        f" ({pf['user']:,} user-mode, {pf['kernel']:,} kernel-mode)"),
        ("interrupts", f"{_fmt_s(irq['hard'])} hard, {_fmt_s(irq['soft'])} soft"),
        ("decompression", f"{dec['calls']:,} calls in {_fmt_s(dec['seconds'])}"),
    ]
    for lib, stats in dec.get("by_library", {}).items():
        rows.append((f"  {lib}", f"{stats['count']:,} calls in {_fmt_s(stats['seconds'])}"))
    width = max(len(label) for label, _ in rows)
    lines = [f"{label:<{width}}  {value}" for label, value in rows]
    top = list(sc.get("by_name", {}).items())[:top_syscalls]
    if top:
        lines.append("")
        lines.append(f"{'syscall':<16} {'count':>10} {'time':>12}")
        for name, stats in top:
            lines.append(f"{name:<16} {stats['count']:>10,} {_fmt_s(stats['seconds']):>12}")
    lines.extend(_analysis_lines(data))
    failures = {k: v for k, v in data.get("map_update_failures", {}).items() if v}
    if failures:
        lines.append("")
        lines.append("WARNING: map updates failed (maps full), figures are low: "
                     + ", ".join(f"{k}={v}" for k, v in failures.items()))
    if data.get("interrupted"):
        lines.append("")
        lines.append("(capture interrupted: figures cover the run up to the signal)")
    return "\n".join(lines)


def _analysis_lines(data: Mapping[str, Any]) -> list[str]:
    """Tax, baseline, cost and percentile sections, when the capture has them."""
    tax = data.get("tax")
    if not isinstance(tax, Mapping):
        return []
    lines = ["", f"instruction tax per invocation: {_fmt_s(tax['seconds'])}"
                 f" ({tax['ratio'] * 100:.1f}% of the billed duration)"]
    estimated = set(tax.get("estimated", []))
    lines.append(f"  {'own work':<18} {_fmt_s(tax.get('own_work_seconds', 0.0)):>12}")
    for name, seconds in tax["by_category"].items():
        mark = " (estimated)" if name in estimated else ""
        lines.append(f"  {name:<18} {_fmt_s(seconds):>12}{mark}")
    lines.append(f"  {'observer (fntax)':<18} {_fmt_s(tax.get('observer_seconds', 0.0)):>12}  (not counted as tax)")
    if tax.get("cpu_share_wait_seconds"):
        lines.append(f"  {'CPU-share wait':<18} {_fmt_s(tax['cpu_share_wait_seconds']):>12}"
                     "  (throttled at the cgroup quota: the share bought, not tax)")
    base = data.get("baseline")
    if isinstance(base, Mapping):
        speedup = base.get("speedup")
        lines.append("")
        lines.append(f"baseline {base['name']} ({base['kind']}): {_fmt_s(base['seconds'])} per invocation"
                     + (f", {speedup:.2f}x faster than here" if speedup and speedup >= 1 else
                        f", {1 / speedup:.2f}x slower than here" if speedup else ""))
    cost = data.get("cost")
    if isinstance(cost, Mapping):
        lines.append("")
        lines.append(f"cost at {cost['memory_mb']} MB ({cost.get('prices', '?')} prices):"
                     f" billed {_fmt_s(cost['billed_seconds'])},"
                     f" ${cost['per_million_dollars']:.2f} per million invocations,"
                     f" of which tax ${cost['tax_per_million_dollars']:.2f};"
                     f" baseline ${cost['baseline_per_million_dollars']:.2f}")
    pct = data.get("percentiles")
    if isinstance(pct, Mapping) and data.get("invocations", 1) > 1:
        keys = ("p20", "p40", "p60", "p80", "p99", "mean")
        lines.append("")
        lines.append(f"{'over ' + str(data['invocations']) + ' runs':<24}" + "".join(f"{k:>11}" for k in keys))
        for name, row in pct.items():
            if name != "duration_seconds" and name != "tax_seconds" and not any(row.values()):
                continue
            label = name.removesuffix("_seconds")
            lines.append(f"{label:<24}" + "".join(f"{_fmt_s(row[k]):>11}" for k in keys))
    return lines
