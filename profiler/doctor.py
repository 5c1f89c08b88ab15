"""`fntax doctor`: what this host supports, and what fntax measures or estimates here.

Every check reports, never raises: a host that can run nothing still gets a
full report. Trial loads go through bcc (imported lazily, here and in
profiler.bpf.probes only); their compiler noise on stderr is silenced.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

from profiler.bpf import arch
from profiler.bpf.loader import bcc_version, trial_load
from profiler.system.host import TRACEFS, headers_state

TRACEPOINTS = ("raw_syscalls/sys_enter", "raw_syscalls/sys_exit", "sched/sched_switch", "sched/sched_wakeup",
               "sched/sched_wakeup_new", "sched/sched_process_fork", "sched/sched_process_exec",
               "sched/sched_process_exit", "task/task_newtask", "exceptions/page_fault_user", "exceptions/page_fault_kernel",
               "irq/irq_handler_entry", "irq/irq_handler_exit", "irq/softirq_entry", "irq/softirq_exit")


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str


@dataclass(frozen=True)
class FigureSupport:
    figure: str
    status: str  # measured | estimated | unavailable
    how: str


@dataclass(frozen=True)
class DoctorReport:
    checks: tuple[Check, ...]
    figures: tuple[FigureSupport, ...]
    headers: str

    def to_json(self) -> dict[str, Any]:
        return {"headers": self.headers,
                "checks": {c.name: {"ok": c.ok, "detail": c.detail} for c in self.checks},
                "figures": {f.figure: {"status": f.status, "how": f.how} for f in self.figures}}

    def ok(self, name: str) -> bool:
        return any(c.ok for c in self.checks if c.name == name)


@contextlib.contextmanager
def _quiet_stderr() -> Iterator[None]:
    """bcc and clang print to fd 2 directly: silence it during trial loads."""
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def _try(check: Callable[[], tuple[bool, str]]) -> tuple[bool, str]:
    try:
        with _quiet_stderr():
            return check()
    except Exception as err:  # a diagnostic: every failure is an answer
        text = str(err).strip().splitlines()
        return False, (text[-1] if text else type(err).__name__)[:120]


def _bcc() -> tuple[bool, str]:
    return True, f"bcc {bcc_version()}"


def _trial(text: str, attach: Callable[[Any], None] | None = None) -> tuple[bool, str]:
    trial_load(text, attach)
    return True, "loaded and attached"


def _raw_tracepoint() -> tuple[bool, str]:
    return _trial("RAW_TRACEPOINT_PROBE(sys_enter) { return 0; }")


def _uprobe() -> tuple[bool, str]:
    def attach(bpf: Any) -> None:
        bpf.attach_uprobe(name="c", sym="getpid", fn_name="probe")
    return _trial("int probe(struct pt_regs *ctx) { return 0; }", attach)


def _kprobe() -> tuple[bool, str]:
    if not Path("/sys/bus/event_source/devices/kprobe").exists() and not (TRACEFS / "kprobe_events").exists():
        return False, "kernel built without kprobes"

    def attach(bpf: Any) -> None:
        bpf.attach_kprobe(event=bpf.get_syscall_fnname("getpid"), fn_name="probe")
    return _trial("int probe(struct pt_regs *ctx) { return 0; }", attach)


def _fentry() -> tuple[bool, str]:
    ok, detail = _try(lambda: _trial("KFUNC_PROBE(do_nanosleep) { return 0; }"))
    if not ok and "super-user" in detail and os.geteuid() == 0:
        # bcc words every EPERM this way; as root it means the kernel refuses.
        detail = "refused by the kernel (function tracing not permitted)"
    return ok, detail


class _PerfEventAttr(ctypes.Structure):
    _fields_ = [("type", ctypes.c_uint32), ("size", ctypes.c_uint32), ("config", ctypes.c_uint64),
                ("sample_period", ctypes.c_uint64), ("sample_type", ctypes.c_uint64),
                ("read_format", ctypes.c_uint64), ("flags", ctypes.c_uint64), ("pad", ctypes.c_uint64 * 10)]


def _perf_event(type_: int, config: int) -> tuple[bool, str]:
    libc = ctypes.CDLL(None, use_errno=True)
    attr = _PerfEventAttr(type=type_, size=ctypes.sizeof(_PerfEventAttr), config=config)
    attr.flags = 1  # disabled
    fd = libc.syscall(arch.current().nr_perf_event_open, ctypes.byref(attr), 0, -1, -1, 0)  # this process
    if fd < 0:
        return False, os.strerror(ctypes.get_errno())
    os.close(fd)
    return True, "perf_event_open works"


def _kvm() -> tuple[bool, str]:
    try:
        fd = os.open("/dev/kvm", os.O_RDWR)
    except OSError as err:
        return False, f"/dev/kvm: {err.strerror}"
    os.close(fd)
    events = (TRACEFS / "events" / "kvm").is_dir()
    return True, "/dev/kvm usable" + (", kvm tracepoints present" if events else ", no kvm tracepoints")


def _file(path: str, expect: str | None = None) -> tuple[bool, str]:
    p = Path(path)
    if not p.exists():
        return False, f"{path} missing"
    if expect is None:
        return True, path
    value = p.read_text().strip()
    return value == expect, f"{path} = {value}"


def _cgroup() -> tuple[bool, str]:
    from profiler.system.cgroup import detect

    version = detect()
    return version != "none", f"cgroup {version}" if version != "none" else "no cpu+memory controllers"


AGENT_URL = "http://127.0.0.1:9636/metrics"


def _agent(url: str) -> tuple[bool, str]:
    """A running agent's map fill, update failures and lost events, from its own metrics."""
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            body = response.read().decode(errors="replace")
    except (OSError, ValueError) as err:
        return False, f"no agent answering at {url} ({getattr(err, 'reason', err)})"
    entries: dict[str, float] = {}
    capacity: dict[str, float] = {}
    failures: dict[str, float] = {}
    lost = 0.0
    try:
        for family in text_string_to_metric_families(body):
            for sample in family.samples:
                name = sample.labels.get("map", "")
                if sample.name == "fntax_map_entries":
                    entries[name] = sample.value
                elif sample.name == "fntax_map_capacity":
                    capacity[name] = sample.value
                elif sample.name == "fntax_map_update_failures_total":
                    failures[name] = sample.value
                elif sample.name == "fntax_events_lost_total":
                    lost = sample.value
    except ValueError as err:
        return False, f"{url} does not serve Prometheus metrics ({err})"
    if not capacity:
        return False, f"{url} answers, but it is not an fntax agent (no fntax_map_capacity)"
    fill = ", ".join(f"{name} {entries.get(name, 0):.0f}/{cap:.0f} ({entries.get(name, 0) / cap:.0%})"
                     for name, cap in sorted(capacity.items()) if cap)
    failed = sum(failures.values())
    full = [name for name, cap in capacity.items() if cap and entries.get(name, 0) >= 0.9 * cap]
    detail = f"{url}: maps {fill}; update failures {failed:.0f}; events lost {lost:.0f}"
    return not failed and not full, detail


def run_checks(agent_url: str = AGENT_URL) -> DoctorReport:
    checks: list[Check] = []

    def add(name: str, result: tuple[bool, str]) -> bool:
        checks.append(Check(name, result[0], result[1]))
        return result[0]

    root = add("root", (os.geteuid() == 0, f"euid {os.geteuid()}"))
    have_bcc = add("bcc", _try(_bcc))
    add("bpf jit", _try(lambda: _file("/proc/sys/net/core/bpf_jit_enable", "1")))
    add("btf", _try(lambda: _file("/sys/kernel/btf/vmlinux")))
    tracefs = add("tracefs", ((TRACEFS / "events").is_dir(), str(TRACEFS) if (TRACEFS / "events").is_dir()
                              else f"not mounted at {TRACEFS}"))
    missing = [tp for tp in TRACEPOINTS if not (TRACEFS / "events" / tp).is_dir()] if tracefs else list(TRACEPOINTS)
    add("tracepoints", (not missing, "all present" if not missing else f"missing: {', '.join(missing[:4])}"))
    can_load = root and have_bcc and tracefs
    skipped = (False, "not tried (needs root, bcc and tracefs)")
    add("raw tracepoints", _try(_raw_tracepoint) if can_load else skipped)
    add("uprobes", _try(_uprobe) if can_load else skipped)
    add("kprobes", _try(_kprobe) if can_load else skipped)
    add("fentry", _fentry() if can_load else skipped)
    add("perf software events", _try(lambda: _perf_event(1, 2)))  # PERF_COUNT_SW_PAGE_FAULTS
    add("hardware counters", _try(lambda: _perf_event(0, 0)))  # PERF_COUNT_HW_CPU_CYCLES
    headers = headers_state()
    build = Path(f"/lib/modules/{os.uname().release}/build")
    add("headers", (headers != "missing", f"{headers}: {build.resolve()}" if headers != "missing" else "missing"))
    add("bpf stats", _try(lambda: _file("/proc/sys/kernel/bpf_stats_enabled")))
    add("kvm", _try(_kvm))
    add("cgroup", _try(_cgroup))
    add("agent", _agent(agent_url))
    report = DoctorReport(tuple(checks), (), headers)
    kvm_rows: tuple[FigureSupport, ...] = ()
    if can_load and report.ok("kvm") and (TRACEFS / "events" / "kvm").is_dir():
        ran, detail, kvm_rows = _kvm_trial()
        add("kvm trial", (ran, detail))
    else:
        add("kvm trial", (False, "not tried (needs root, bcc, tracefs, /dev/kvm and the kvm tracepoints)"))
    report = DoctorReport(tuple(checks), (), headers)
    return DoctorReport(tuple(checks), derive_figures(report, kvm_rows), headers)


# Doctor's words for the KVM figure groups (profiler.tax.virtualization.KVM_GROUPS).
_KVM_ROWS = {
    "exits": ("KVM exits by reason", "kvm:kvm_exit", "kvm_exit never fired for the trial guest (nested/PVM host)"),
    "exit_seconds": ("KVM exit time", "kvm:kvm_exit -> kvm:kvm_entry", "kvm_exit/kvm_entry silent"),
    "userspace_exits": ("KVM exits to the VM monitor", "kvm:kvm_userspace_exit", "none seen"),
    "userspace_exit_seconds": ("KVM exit time in the VM monitor", "userspace exit -> next kvm_entry or KVM_RUN",
                               "none seen"),
    "pio": ("port I/O exits by bucket", "kvm:kvm_pio", "none seen"),
    "mmio": ("MMIO exits", "kvm:kvm_mmio", "the trial guest makes none"),
    "halts": ("guest halts (idle, not tax)", "kvm:kvm_vcpu_wakeup", "the trial guest does not halt"),
    "vcpu_wait": ("vCPU run-queue wait", "sched:sched_switch of vCPU threads", ""),
    "virtualization": ("virtualization tax", "exit time", "exits reaching the VM monitor only"),
}


def _kvm_trial() -> tuple[bool, str, tuple[FigureSupport, ...]]:
    """Boot a tiny guest for a moment; each KVM figure measured, partial or unavailable."""
    from profiler.bpf.kvm_trial import run_trial
    from profiler.tax.virtualization import Visibility, visibility

    try:
        with _quiet_stderr():
            trial = run_trial()
    except Exception as err:  # a check reports, never raises
        return False, f"{type(err).__name__}: {err}", ()
    if not trial.ran:
        return False, trial.detail, ()
    seen = visibility(trial.counters)
    rows = []
    for group, state in seen.states.items():
        name, how, why_not = _KVM_ROWS[group]
        if state is Visibility.MEASURED:
            rows.append(FigureSupport(name, "measured", how))
        elif state is Visibility.PARTIAL:
            rows.append(FigureSupport(name, "partial", why_not))
        else:
            rows.append(FigureSupport(name, "unavailable" if state is Visibility.UNAVAILABLE else "not seen",
                                      why_not))
    post = trial.kvm.pio_by_port.get("post")
    detail = f"{trial.detail}; {post.count if post else 0} of {trial.writes} port writes seen"
    return True, detail, tuple(rows)


def derive_figures(report: DoctorReport, kvm_rows: tuple[FigureSupport, ...] = ()) -> tuple[FigureSupport, ...]:
    """What each reported figure rests on, given the host's capabilities."""
    ok = report.ok
    base = ok("root") and ok("bcc") and ok("tracefs")
    raw = base and ok("raw tracepoints")
    tps = base and ok("tracepoints")

    def fig(name: str, measured: bool, how: str, fallback: str = "unavailable", fallback_how: str = "") -> \
            FigureSupport:
        return FigureSupport(name, "measured" if measured else fallback, how if measured else fallback_how)

    return (
        fig("syscalls (count, time)", raw, "raw tracepoints sys_enter/sys_exit"),
        fig("context switches", tps, "sched:sched_switch"),
        fig("on-CPU time", tps, "sched:sched_switch"),
        fig("run-queue wait", tps, "sched:sched_wakeup + sched_switch"),
        fig("page faults user/kernel", tps, "exceptions:page_fault_user/kernel"),
        fig("page faults minor/major", base and ok("perf software events"), "perf software events",
            "unavailable", "no perf software events"),
        fig("interrupt time", tps, "irq:irq_handler_*, irq:softirq_*"),
        fig("decompression", base and ok("uprobes"), "uprobes on decoder entry points"),
        fig("page-fault time (tax)", base and ok("kprobes"), "kprobes around the fault handler",
            "estimated", "fault count x calibrated fault cost (no kprobes)"),
        fig("context-switch time (tax)", False, "", "estimated", "switch count x calibrated switch cost"),
        fig("observer cost", base and ok("bpf stats"), "kernel BPF run-time statistics"),
    ) + (kvm_rows or (FigureSupport("KVM figures", "unavailable",
                                    "no KVM trial: " + next((c.detail for c in report.checks
                                                             if c.name == "kvm trial"), "not tried")),))


def render(report: DoctorReport) -> str:
    width = max(len(c.name) for c in report.checks)
    lines = ["host capabilities:"]
    lines += [f"  {c.name:<{width}}  {'yes' if c.ok else 'no ':<3}  {c.detail}" for c in report.checks]
    lines.append(f"headers: {report.headers}")
    lines.append("")
    lines.append("figures on this host:")
    fwidth = max(len(f.figure) for f in report.figures)
    lines += [f"  {f.figure:<{fwidth}}  {f.status:<11}  {f.how}" for f in report.figures]
    return "\n".join(lines)
