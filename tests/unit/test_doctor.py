"""Which figures are measured or estimated follows from the capabilities (no kernel)."""

from __future__ import annotations

from profiler.doctor import Check, DoctorReport, derive_figures, render

NAMES = ("root", "bcc", "tracefs", "tracepoints", "raw tracepoints", "uprobes", "kprobes",
         "perf software events", "bpf stats", "kvm")


def _report(**flags: bool) -> DoctorReport:
    checks = tuple(Check(name, flags.get(name.replace(" ", "_"), True), "") for name in NAMES)
    return DoctorReport(checks, (), "fallback")


def _status(report: DoctorReport) -> dict[str, str]:
    return {f.figure: f.status for f in derive_figures(report)}


def test_this_kind_of_host() -> None:
    status = _status(_report(kprobes=False))
    assert status["syscalls (count, time)"] == "measured"
    assert status["page-fault time (tax)"] == "estimated"
    assert status["context-switch time (tax)"] == "estimated"
    assert status["decompression"] == "measured"


def test_kprobes_make_fault_time_measured() -> None:
    assert _status(_report())["page-fault time (tax)"] == "measured"


def test_without_root_nothing_is_measured() -> None:
    status = _status(_report(root=False))
    assert status["syscalls (count, time)"] == "unavailable"
    assert status["decompression"] == "unavailable"


def test_render_names_headers() -> None:
    report = _report()
    text = render(DoctorReport(report.checks, derive_figures(report), "fallback"))
    assert "headers: fallback" in text
