"""The agent's per-function tax: the capture's model, observer taken out, never decreasing (no kernel)."""

from __future__ import annotations

import pytest

from profiler.attribution.rules import WorkloadKind
from profiler.figures import CATEGORIES
from profiler.ledger.functions import EXITED, FunctionView
from profiler.model import CallStats, Counters, WorkloadSummary
from profiler.tax.compute import HostCosts, compute_tax
from profiler.tax.function_tax import TaxLedger

COSTS = HostCosts(page_fault_minor=1e-6, context_switch=2e-6, syscall=1e-7, function_call=1e-9)
MEANS = {"sys_enter": 150.0, "sys_exit": 120.0, "sched:sched_switch": 300.0}


def _view(name: str, counters: Counters, decomp: dict[str, CallStats] | None = None) -> FunctionView:
    return FunctionView(name, WorkloadKind.PROCESS, 256, 1, counters, {}, decomp or {}, 1)


BUSY = Counters(syscalls=100_000, syscall_ns=80_000_000, syscall_offcpu_ns=10_000_000, voluntary_switches=500,
                oncpu_ns=500_000_000, runqueue_ns=5_000_000, faults_user=1_000, hardirq_ns=10_000)


def test_same_tax_as_a_capture_with_the_observer_taken_out() -> None:
    taxed = TaxLedger(COSTS, 0.0000166667, 128).update([_view("fn", BUSY)], MEANS)[0]
    capture = compute_tax(WorkloadSummary(0.0, 1, BUSY, {}, {}), COSTS, MEANS)
    for category in CATEGORIES:
        assert taxed.tax_by_category[category] == pytest.approx(capture.by_category[category])
    # The probes' own time inside the syscalls is not syscall tax.
    with_probe_time = compute_tax(WorkloadSummary(0.0, 1, BUSY, {}, {}), COSTS, {})
    assert taxed.tax_by_category["syscalls"] < with_probe_time.by_category["syscalls"]
    assert taxed.tax_dollars == pytest.approx(capture.seconds * 256 / 1024 * 0.0000166667)


@pytest.mark.parametrize("mean_ns", [150.0, 1_500.0, 15_000.0])
def test_the_parts_never_pass_the_cpu_time_however_high_the_probe_means(mean_ns: float) -> None:
    """A loop of cheap syscalls: the probes' measured means times their runs can
    exceed the CPU time they ran in. The syscall figure, then the observer,
    give way: the parts add up to the CPU time, none of them negative."""
    spinner = Counters(syscalls=1_400_000, syscall_ns=500_000_000, oncpu_ns=600_000_000)
    tax = compute_tax(WorkloadSummary(0.0, 1, spinner, {}, {}), COSTS,
                      {"sys_enter": mean_ns, "sys_exit": mean_ns})
    parts = tax.own_work_seconds + tax.observer_seconds + sum(
        tax.by_category[c] for c in CATEGORIES if c != "runqueue_wait")
    assert parts == pytest.approx(0.6, rel=1e-9)
    assert min(tax.own_work_seconds, tax.observer_seconds, *tax.by_category.values()) >= 0.0
    assert tax.observer_seconds == pytest.approx(min(0.6, tax.observer_seconds), rel=1e-9)


def test_totals_never_decrease() -> None:
    ledger = TaxLedger(COSTS, 0.0000166667, 128)
    first = ledger.update([_view("fn", BUSY)], MEANS)[0]
    # The function's figures shrink (a process re-attributed away) and the
    # probes' measured means change: its tax and dollars hold.
    smaller = Counters(syscalls=10, syscall_ns=1_000, oncpu_ns=1_000_000)
    second = ledger.update([_view("fn", smaller)], {k: v * 3 for k, v in MEANS.items()})[0]
    for category in CATEGORIES:
        assert second.tax_by_category[category] >= first.tax_by_category[category]
    assert second.tax_dollars >= first.tax_dollars
    # Growth back to the old level is not taxed twice.
    third = ledger.update([_view("fn", BUSY)], MEANS)[0]
    assert third.tax_by_category == second.tax_by_category


def test_a_folded_function_takes_its_tax_to_exited() -> None:
    ledger = TaxLedger(COSTS, 0.0000166667, 128)
    before = ledger.update([_view("fn", BUSY)], MEANS)[0]
    after = {t.view.function: t for t in ledger.update([_view(EXITED, BUSY)], MEANS)}
    assert after[EXITED].tax_by_category == pytest.approx(before.tax_by_category)
    assert after[EXITED].tax_dollars == pytest.approx(before.tax_dollars)
