"""Capture JSON (version 1): the one writer and the one reader.

Counter blocks are laid out by the figure table (each figure's `json` path),
so a new figure appears in captures, and is read back, with no edit here.
The reader turns any file into a typed ProfileResult or one error naming the
file and the field; a missing optional field reads as its empty value (hand
trimmed captures still compare), a field of the wrong type never passes.
"""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path
from typing import Any, Mapping, Sequence

from profiler.errors import ConfigError
from profiler.figures import (
    CATEGORIES,
    DECOMPRESSION_BY_LIBRARY,
    FIGURES,
    KVM_TABLES,
    SYSCALLS_BY_NAME,
    CallTable,
    Unit,
)
from profiler.files import read_json
from profiler.model import (
    NS_PER_SECOND,
    CallStats,
    Capture,
    Counters,
    HostInfo,
    KvmCalls,
    ProcessSample,
    WorkloadSummary,
)
from profiler.tax.cost import Cost
from profiler.tax.result import BaselineSummary, ProfileResult, RunRow, TaxSummary, WallSummary
from profiler.tax.virtualization import virtualization_seconds, visibility

CAPTURE_VERSION = 1


# -- writing -------------------------------------------------------------------
def _put(block: dict[str, Any], path: Sequence[str], value: Any) -> None:
    for key in path[:-1]:
        block = block.setdefault(key, {})
    block[path[-1]] = value


def _seconds(ns: int) -> float:
    return ns / NS_PER_SECOND


def _calls_json(table: CallTable, calls: Mapping[str, CallStats]) -> dict[str, dict[str, float | int]]:
    ordered = sorted(calls.items(), key=lambda item: (-item[1].ns, item[0]))
    return {name: {"count": stats.count, "seconds": _seconds(stats.ns),
                   **({"cpu_seconds": _seconds(stats.cpu_ns)} if table.cpu_seconds else {})}
            for name, stats in ordered}


def counters_json(counters: Counters, syscalls: Mapping[str, CallStats],
                  decompression: Mapping[str, CallStats], kvm: KvmCalls | None = None) -> dict[str, Any]:
    """The counter block shared by the workload and each process."""
    block: dict[str, Any] = {}
    for figure, raw in counters.items():
        _put(block, figure.json, figure.value(raw))
    _put(block, SYSCALLS_BY_NAME.json, _calls_json(SYSCALLS_BY_NAME, syscalls))
    decomp = list(decompression.values())
    _put(block, ("decompression", "seconds"), _seconds(sum(s.ns for s in decomp)))
    _put(block, ("decompression", "cpu_seconds"), _seconds(sum(s.cpu_ns for s in decomp)))
    _put(block, ("decompression", "calls"), sum(s.count for s in decomp))
    _put(block, DECOMPRESSION_BY_LIBRARY.json, _calls_json(DECOMPRESSION_BY_LIBRARY, decompression))
    _kvm_json(block, counters, kvm or KvmCalls())
    return block


def _kvm_json(block: dict[str, Any], counters: Counters, kvm: KvmCalls) -> None:
    """The KVM block's tables, and which of its figures this host could measure."""
    for table, calls in zip(KVM_TABLES, kvm.tables()):
        _put(block, table.json, _calls_json(table, calls))
    seen = visibility(counters)
    _put(block, ("kvm", "measurable"), seen.as_json())
    _put(block, ("kvm", "virtualization_seconds"), virtualization_seconds(counters))
    _put(block, ("kvm", "virtualization_partial"), seen.partial)


def _process_json(proc: ProcessSample) -> dict[str, Any]:
    return {"pid": proc.pid, "comm": proc.comm, "exited": proc.exited,
            **counters_json(proc.counters, proc.syscalls_by_name, proc.decompression_by_library, proc.kvm)}


def capture_json(capture: Capture) -> dict[str, Any]:
    """A bare capture (no analysis) as JSON."""
    return to_json(ProfileResult(
        command=capture.command, pid=capture.pid, exit_code=capture.exit_code, interrupted=capture.interrupted,
        host=capture.host, workload=capture.workload, per_process=capture.per_process,
        map_update_failures=capture.map_update_failures))


def to_json(result: ProfileResult) -> dict[str, Any]:
    workload = result.workload
    data: dict[str, Any] = {
        "version": CAPTURE_VERSION,
        "command": list(result.command),
        "pid": result.pid,
        "exit_code": result.exit_code,
        "interrupted": result.interrupted,
        "host": {"kernel": result.host.kernel, "cpus": result.host.cpus,
                 "headers": result.host.headers, "cpu_model": result.host.cpu_model},
        "workload": {"wall_seconds": workload.wall_seconds, "processes": workload.processes,
                     **counters_json(workload.counters, workload.syscalls_by_name,
                                     workload.decompression_by_library, workload.kvm)},
        "per_process": [_process_json(p) for p in result.per_process],
        "map_update_failures": dict(result.map_update_failures),
        "probe_runs_skipped": dict(result.probe_misses),
    }
    if result.tax is None:
        return data
    data["invocations"] = result.invocations
    data["warmup"] = result.warmup
    tax = result.tax
    data["tax"] = {"seconds": tax.seconds, "ratio": tax.ratio, "own_work_seconds": tax.own_work_seconds,
                   "observer_seconds": tax.observer_seconds, "cpu_share_wait_seconds": tax.cpu_share_wait_seconds,
                   "by_category": {name: tax.by_category.get(name, 0.0) for name in CATEGORIES},
                   "estimated": list(tax.estimated),
                   "cpu_seconds": tax.cpu_seconds, "cpu_ratio": tax.cpu_ratio,
                   "wall_by_category": {name: tax.wall_by_category.get(name, 0.0) for name in CATEGORIES},
                   "estimate_scale": tax.estimate_scale, "unsteady_calibration": list(tax.unsteady),
                   "cgroup_throttled_seconds": tax.cgroup_throttled_seconds}
    if tax.wall is not None:
        w = tax.wall
        data["tax"]["wall"] = {"wall_seconds": w.wall_seconds, "busy_seconds": w.busy_seconds,
                               "waiting_cpu_seconds": w.waiting_cpu_seconds,
                               "waiting_share_seconds": w.waiting_share_seconds,
                               "blocked_seconds": w.blocked_seconds, "own_work_seconds": w.own_work_seconds,
                               "observer_seconds": w.observer_seconds, "measured": w.measured,
                               "lock_misses": w.lock_misses}
    if result.baseline is not None:
        b = result.baseline
        data["baseline"] = {"name": b.name, "kind": b.kind, "seconds": b.seconds, "speedup": b.speedup,
                            "difference_by_category": dict(b.difference_by_category),
                            "whole_cpu_seconds": b.whole_cpu_seconds, "cpu_share": b.cpu_share,
                            "parallelism": b.parallelism, "blocked_seconds": b.blocked_seconds}
    if result.cost is not None:
        c = result.cost
        data["cost"] = {"memory_mb": c.memory_mb, "billed_seconds": c.billed_seconds,
                        "per_invocation_dollars": c.per_invocation_dollars,
                        "per_million_dollars": c.per_million_dollars,
                        "tax_per_million_dollars": c.tax_per_million_dollars,
                        "baseline_per_million_dollars": c.baseline_per_million_dollars,
                        "prices": result.prices}
    data["runs"] = [{"run": r.run, "warmup": r.warmup, "pid": r.pid, "exit_code": r.exit_code,
                     "duration_seconds": r.duration_seconds, "oncpu_seconds": r.oncpu_seconds,
                     "tax_seconds": r.tax_seconds, "observer_seconds": r.observer_seconds,
                     "cpu_share_wait_seconds": r.cpu_share_wait_seconds, "by_category": dict(r.by_category),
                     "baremetal_seconds": r.baremetal_seconds, "cpu_tax_seconds": r.cpu_tax_seconds,
                     "wall_by_category": dict(r.wall_by_category), "blocked_seconds": r.blocked_seconds}
                    for r in result.runs]
    data["percentiles"] = {name: dict(row) for name, row in result.percentiles.items()}
    data["cpu_share"] = result.cpu_share
    return data


# -- reading -------------------------------------------------------------------
_MISSING: Any = object()


def _finite(value: Any) -> float | None:
    """A JSON number as a finite float, else None (booleans, NaN, infinities, huge integers)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        number = float(value)
    except OverflowError:
        return None
    return number if math.isfinite(number) else None


class _Reader:
    """Typed access to a decoded JSON document; every error names file and field."""

    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, path: str, expected: str) -> ConfigError:
        # A key of the file's own making may hold anything, a newline too: the
        # error stays one line.
        shown = path.encode("unicode_escape").decode("ascii")
        return ConfigError(f"{self.source}: field '{shown}' must be {expected}")

    def get(self, data: Mapping[str, Any], path: Sequence[str], where: str) -> Any:
        """The value at path; _MISSING when a step is absent (null is a value)."""
        value: Any = data
        for i, key in enumerate(path):
            if value is _MISSING:
                return _MISSING
            if not isinstance(value, Mapping):
                raise self.fail(".".join([where, *path[:i]]).strip("."), "an object")
            value = value.get(key, _MISSING)
        return value

    def number(self, data: Mapping[str, Any], path: Sequence[str], where: str = "",
               default: float | None = 0.0) -> float | None:
        """A number; missing reads as `default`; null only where `default` is None (a nullable field)."""
        value = self.get(data, path, where)
        if value is _MISSING or (value is None and default is None):
            return default
        number = _finite(value)
        if number is None:
            raise self.fail(".".join([where, *path]).strip("."), "a number")
        return number

    def real(self, data: Mapping[str, Any], path: Sequence[str], where: str = "") -> float:
        value = self.number(data, path, where)
        assert value is not None
        return value

    def integer(self, data: Mapping[str, Any], path: Sequence[str], where: str = "",
                default: int | None = 0) -> int | None:
        value = self.get(data, path, where)
        if value is _MISSING or (value is None and default is None):
            return default
        if isinstance(value, bool) or not isinstance(value, int) or not -2**63 <= value < 2**64:
            raise self.fail(".".join([where, *path]).strip("."), "an integer (64-bit)")
        return value

    def ns(self, data: Mapping[str, Any], path: Sequence[str], where: str = "") -> int:
        """Seconds as whole nanoseconds, within the probes' u64 range."""
        seconds = self.real(data, path, where)
        if not 0 <= seconds * NS_PER_SECOND < 2**64:
            raise self.fail(".".join([where, *path]).strip("."), "seconds from 0 to 2^64 ns")
        return round(seconds * NS_PER_SECOND)

    def count(self, data: Mapping[str, Any], path: Sequence[str], where: str = "") -> int:
        value = self.integer(data, path, where)
        assert value is not None
        if value < 0:
            raise self.fail(".".join([where, *path]).strip("."), "a count (0 or more)")
        return value

    def text(self, data: Mapping[str, Any], path: Sequence[str], where: str = "", default: str = "") -> str:
        value = self.get(data, path, where)
        if value is _MISSING:
            return default
        if not isinstance(value, str):
            raise self.fail(".".join([where, *path]).strip("."), "a string")
        return value

    def mapping(self, data: Mapping[str, Any], path: Sequence[str], where: str = "") -> Mapping[str, Any]:
        value = self.get(data, path, where)
        if value is _MISSING:
            return {}
        if not isinstance(value, Mapping):
            raise self.fail(".".join([where, *path]).strip("."), "an object")
        return value

    def listing(self, data: Mapping[str, Any], key: str, where: str = "") -> list[Any]:
        value = self.get(data, (key,), where)
        if value is _MISSING:
            return []
        if not isinstance(value, list):
            raise self.fail(f"{where}.{key}".strip("."), "a list")
        return value

    def counters(self, block: Mapping[str, Any], where: str) -> Counters:
        values = []
        for figure in FIGURES:
            if figure.unit is Unit.NANOSECONDS:
                values.append(self.ns(block, figure.json, where))
            else:
                values.append(self.count(block, figure.json, where))
        return Counters(values)

    def calls(self, block: Mapping[str, Any], table: CallTable, where: str) -> dict[str, CallStats]:
        place = ".".join([where, *table.json])
        out = {}
        for name, row in self.mapping(block, table.json, where).items():
            if not isinstance(row, Mapping):
                raise self.fail(f"{place}.{name}", "an object")
            out[str(name)] = CallStats(self.count(row, ("count",), f"{place}.{name}"),
                                       self.ns(row, ("seconds",), f"{place}.{name}"),
                                       self.ns(row, ("cpu_seconds",), f"{place}.{name}"))
        return out

    def kvm(self, block: Mapping[str, Any], where: str) -> KvmCalls:
        return KvmCalls(*(self.calls(block, table, where) for table in KVM_TABLES))

    def floats(self, data: Mapping[str, Any], path: Sequence[str], where: str) -> dict[str, float]:
        place = ".".join([where, *path]).strip(".")
        out = {}
        for key, value in self.mapping(data, path, where).items():
            number = _finite(value)
            if number is None:
                raise self.fail(f"{place}.{key}", "a number")
            out[str(key)] = number
        return out


def from_json(data: Mapping[str, Any], source: str) -> ProfileResult:
    """A decoded capture (version 1) as a typed result, or ConfigError naming file and field."""
    r = _Reader(source)
    if data.get("version") != CAPTURE_VERSION:
        raise ConfigError(f"{source}: field 'version' is {data.get('version')!r}, expected {CAPTURE_VERSION}")
    if not isinstance(data.get("workload"), Mapping):
        raise ConfigError(f"{source}: missing field 'workload'")
    w = r.mapping(data, ("workload",))
    workload = WorkloadSummary(wall_seconds=r.real(w, ("wall_seconds",), "workload"),
                               processes=r.count(w, ("processes",), "workload"),
                               counters=r.counters(w, "workload"),
                               syscalls_by_name=r.calls(w, SYSCALLS_BY_NAME, "workload"),
                               decompression_by_library=r.calls(w, DECOMPRESSION_BY_LIBRARY, "workload"),
                               kvm=r.kvm(w, "workload"))
    per_process = []
    for i, proc in enumerate(r.listing(data, "per_process")):
        where = f"per_process[{i}]"
        if not isinstance(proc, Mapping):
            raise r.fail(where, "an object")
        per_process.append(ProcessSample(
            pid=r.count(proc, ("pid",), where), comm=r.text(proc, ("comm",), where), workload=1,
            exited=bool(proc.get("exited", False)), counters=r.counters(proc, where),
            syscalls_by_name=r.calls(proc, SYSCALLS_BY_NAME, where),
            decompression_by_library=r.calls(proc, DECOMPRESSION_BY_LIBRARY, where),
            kvm=r.kvm(proc, where)))
    command = r.listing(data, "command")
    host = r.mapping(data, ("host",))
    result = ProfileResult(
        command=tuple(str(part) for part in command), pid=r.count(data, ("pid",)),
        exit_code=r.integer(data, ("exit_code",), default=None), interrupted=bool(data.get("interrupted", False)),
        host=HostInfo(kernel=r.text(host, ("kernel",), "host", "?"),
                      cpus=r.count(host, ("cpus",), "host"),
                      headers=r.text(host, ("headers",), "host", "?"),
                      cpu_model=r.text(host, ("cpu_model",), "host")),
        workload=workload, per_process=tuple(per_process),
        map_update_failures={k: int(v) for k, v in r.floats(data, ("map_update_failures",), "").items()},
        probe_misses={k: int(v) for k, v in r.floats(data, ("probe_runs_skipped",), "").items()},
        invocations=max(1, r.count(data, ("invocations",)) or 1), warmup=r.count(data, ("warmup",)))
    if "tax" not in data or data["tax"] is None:
        return result
    t = r.mapping(data, ("tax",))
    estimated = r.listing(t, "estimated", "tax")
    wall = None
    if t.get("wall") is not None:
        w = r.mapping(t, ("wall",), "tax")
        wall = WallSummary(**{name: r.real(w, (name,), "tax.wall") for name in (
            "wall_seconds", "busy_seconds", "waiting_cpu_seconds", "waiting_share_seconds", "blocked_seconds",
            "own_work_seconds", "observer_seconds")}, measured=bool(w.get("measured", True)),
            lock_misses=r.count(w, ("lock_misses",), "tax.wall"))
    tax = TaxSummary(seconds=r.real(t, ("seconds",), "tax"), ratio=r.real(t, ("ratio",), "tax"),
                     own_work_seconds=r.real(t, ("own_work_seconds",), "tax"),
                     observer_seconds=r.real(t, ("observer_seconds",), "tax"),
                     cpu_share_wait_seconds=r.real(t, ("cpu_share_wait_seconds",), "tax"),
                     by_category=r.floats(t, ("by_category",), "tax"),
                     estimated=tuple(str(e) for e in estimated),
                     cpu_seconds=r.number(t, ("cpu_seconds",), "tax", default=None),
                     cpu_ratio=r.number(t, ("cpu_ratio",), "tax", default=None),
                     wall_by_category=r.floats(t, ("wall_by_category",), "tax"), wall=wall,
                     estimate_scale=r.number(t, ("estimate_scale",), "tax", default=1.0) or 1.0,
                     unsteady=tuple(str(u) for u in r.listing(t, "unsteady_calibration", "tax")),
                     cgroup_throttled_seconds=r.number(t, ("cgroup_throttled_seconds",), "tax", default=None))
    baseline = None
    if isinstance(data.get("baseline"), Mapping):
        b = data["baseline"]
        baseline = BaselineSummary(name=r.text(b, ("name",), "baseline"), kind=r.text(b, ("kind",), "baseline"),
                                   seconds=r.real(b, ("seconds",), "baseline"),
                                   speedup=r.number(b, ("speedup",), "baseline", default=None),
                                   difference_by_category=r.floats(b, ("difference_by_category",), "baseline"),
                                   whole_cpu_seconds=r.number(b, ("whole_cpu_seconds",), "baseline", default=None),
                                   cpu_share=r.number(b, ("cpu_share",), "baseline", default=None),
                                   parallelism=r.number(b, ("parallelism",), "baseline", default=None),
                                   blocked_seconds=r.number(b, ("blocked_seconds",), "baseline", default=None))
    elif data.get("baseline") is not None:
        raise r.fail("baseline", "an object")
    cost = None
    prices = None
    if isinstance(data.get("cost"), Mapping):
        c = data["cost"]
        cost = Cost(memory_mb=r.count(c, ("memory_mb",), "cost"),
                    billed_seconds=r.real(c, ("billed_seconds",), "cost"),
                    per_invocation_dollars=r.real(c, ("per_invocation_dollars",), "cost"),
                    per_million_dollars=r.real(c, ("per_million_dollars",), "cost"),
                    tax_per_million_dollars=r.real(c, ("tax_per_million_dollars",), "cost"),
                    baseline_per_million_dollars=r.real(c, ("baseline_per_million_dollars",), "cost"))
        prices = r.text(c, ("prices",), "cost", "?")
    elif data.get("cost") is not None:
        raise r.fail("cost", "an object")
    runs = []
    for i, run in enumerate(r.listing(data, "runs")):
        where = f"runs[{i}]"
        if not isinstance(run, Mapping):
            raise r.fail(where, "an object")
        runs.append(RunRow(run=r.count(run, ("run",), where), warmup=bool(run.get("warmup", False)),
                           pid=r.count(run, ("pid",), where),
                           exit_code=r.integer(run, ("exit_code",), where, default=None),
                           duration_seconds=r.real(run, ("duration_seconds",), where),
                           oncpu_seconds=r.real(run, ("oncpu_seconds",), where),
                           tax_seconds=r.real(run, ("tax_seconds",), where),
                           observer_seconds=r.real(run, ("observer_seconds",), where),
                           cpu_share_wait_seconds=r.real(run, ("cpu_share_wait_seconds",), where),
                           by_category=r.floats(run, ("by_category",), where),
                           baremetal_seconds=r.real(run, ("baremetal_seconds",), where),
                           cpu_tax_seconds=r.real(run, ("cpu_tax_seconds",), where),
                           wall_by_category=r.floats(run, ("wall_by_category",), where),
                           blocked_seconds=r.real(run, ("blocked_seconds",), where)))
    percentile_rows = {str(name): r.floats(data, ("percentiles", name), "")
                       for name in r.mapping(data, ("percentiles",))}
    return replace(result, tax=tax, baseline=baseline, cost=cost, prices=prices, runs=tuple(runs),
                   percentiles=percentile_rows, cpu_share=r.number(data, ("cpu_share",), default=None))


def read_capture(path: str | Path) -> ProfileResult:
    """A capture file as a typed result (one error naming the file and field otherwise)."""
    return from_json(read_json(path, expect_version=CAPTURE_VERSION), str(path))
