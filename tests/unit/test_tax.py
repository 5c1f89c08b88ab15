"""Tax arithmetic: the parts add up to the measured whole (no kernel)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from profiler.model import CallStats, Counters, WorkloadSummary
from profiler.model import Timeline
from profiler.tax.compute import wall_tax
from profiler.tax.compute import CATEGORIES, HostCosts, baremetal, compute_tax, observer_seconds

COSTS = HostCosts(page_fault_minor=500e-9, context_switch=2e-6, syscall=100e-9, function_call=2e-9)
PROBES = {"sys_enter": 40.0, "sys_exit": 45.0, "sched_switch": 300.0, "page_fault_user": 80.0,
          "page_fault_kernel": 80.0, "fntax_fault_minor": 100.0, "fntax_fault_major": 100.0}


def _workload(counters: Counters, decomp_ns: int = 0, wall_ns: int = 1_000_000_000) -> WorkloadSummary:
    return WorkloadSummary(wall_seconds=wall_ns / 1e9, processes=1, counters=counters, syscalls_by_name={},
                           decompression_by_library={"libz": CallStats(3, decomp_ns, decomp_ns)} if decomp_ns else {})


def _identity(tax_oncpu: float, tax_rq: float, tax) -> None:  # type: ignore[no-untyped-def]
    parts = tax.own_work_seconds + tax.observer_seconds + sum(tax.by_category.values()) + tax.cpu_share_wait_seconds
    assert parts == pytest.approx(tax_oncpu + tax_rq, rel=1e-9, abs=1e-12)


def test_parts_add_up_to_oncpu_plus_waiting() -> None:
    c = Counters(syscalls=10_000, syscall_ns=30_000_000, syscall_offcpu_ns=10_000_000, voluntary_switches=100,
                 involuntary_switches=20, oncpu_ns=500_000_000, runqueue_ns=40_000_000, faults_user=20_000,
                 faults_kernel=1_000, faults_minor=21_000, hardirq_ns=1_000_000, softirq_ns=2_000_000)
    tax = compute_tax(_workload(c, decomp_ns=50_000_000), COSTS, PROBES)
    _identity(0.5, 0.04, tax)
    assert tax.by_category["runqueue_wait"] == pytest.approx(0.04)
    assert tax.by_category["page_faults"] == pytest.approx(20_000 * 500e-9)
    assert tax.by_category["context_switches"] == pytest.approx(120 * 2e-6)
    assert tax.by_category["interrupts"] == pytest.approx(0.003)
    assert tax.by_category["decompression"] == pytest.approx(0.05)
    assert tax.by_category["virtualization"] == 0.0
    observer, inside = observer_seconds(c, PROBES)
    assert tax.observer_seconds == pytest.approx(observer)
    # syscall CPU 20 ms, less voluntary switches' direct cost, less probe time inside them
    assert tax.by_category["syscalls"] == pytest.approx(0.020 - 100 * 2e-6 - inside)
    assert set(tax.estimated) == {"page_faults", "context_switches"}
    assert set(tax.by_category) == set(CATEGORIES)


@settings(max_examples=300)
@given(syscalls=st.integers(0, 10**6), sys_ns=st.integers(0, 10**9), off=st.integers(0, 10**9),
       vol=st.integers(0, 10**4), invol=st.integers(0, 10**4), oncpu=st.integers(0, 2 * 10**9),
       rq=st.integers(0, 10**9), fu=st.integers(0, 10**6), fk=st.integers(0, 10**5),
       irq=st.integers(0, 10**7), dec=st.integers(0, 10**8))
def test_identity_holds_or_own_work_is_clamped(syscalls: int, sys_ns: int, off: int, vol: int, invol: int,
                                               oncpu: int, rq: int, fu: int, fk: int, irq: int, dec: int) -> None:
    c = Counters(syscalls=syscalls, syscall_ns=sys_ns, syscall_offcpu_ns=min(off, sys_ns),
                 voluntary_switches=vol, involuntary_switches=invol, oncpu_ns=oncpu, runqueue_ns=rq,
                 faults_user=fu, faults_kernel=fk, faults_minor=fu + fk, softirq_ns=irq)
    tax = compute_tax(_workload(c, dec), COSTS, PROBES)
    assert tax.own_work_seconds >= 0
    assert all(v >= 0 for v in tax.by_category.values())
    measured_oncpu = (sum(v for k, v in tax.by_category.items()
                          if k not in ("page_faults", "context_switches", "runqueue_wait"))
                      + tax.observer_seconds)
    if measured_oncpu <= oncpu / 1e9:
        # Only estimates can be scaled; measured parts never exceed what was measured.
        _identity(oncpu / 1e9, rq / 1e9, tax)


def test_throttling_is_split_off_as_cpu_share_wait() -> None:
    # 300 ms waiting, 250 ms of it while the CPU it waited on sat idle.
    c = Counters(oncpu_ns=100_000_000, runqueue_ns=300_000_000, runqueue_idle_ns=250_000_000)
    tax = compute_tax(_workload(c), COSTS, {}, quota=True)
    assert tax.cpu_share_wait_seconds == pytest.approx(0.25)
    assert tax.by_category["runqueue_wait"] == pytest.approx(0.05)
    _identity(0.1, 0.3, tax)
    # Without a quota an idle CPU's wait is the CPU waking up: run-queue tax.
    free = compute_tax(_workload(c), COSTS, {})
    assert free.cpu_share_wait_seconds == 0 and free.by_category["runqueue_wait"] == pytest.approx(0.3)
    # never more than the measured wait
    over = Counters(oncpu_ns=100_000_000, runqueue_ns=300_000_000, runqueue_idle_ns=900_000_000)
    assert compute_tax(_workload(over), COSTS, {}, quota=True).cpu_share_wait_seconds == pytest.approx(0.3)


def test_baremetal_model() -> None:
    c = Counters(syscalls=1_000, syscall_ns=5_000_000, syscall_offcpu_ns=3_000_000, oncpu_ns=100_000_000,
                 runqueue_ns=1_000_000, faults_user=100, faults_minor=100)
    w = _workload(c)
    tax = compute_tax(w, COSTS, {})
    # One task: busy while on a CPU; 2 ms with the whole workload asleep.
    timeline = Timeline(1, 104_000_000, busy_ns=100_000_000, waiting_ns=1_000_000, blocked_ns=2_000_000)
    base = baremetal(w, tax, wall_tax(tax, timeline, 0.103), COSTS)
    # syscall CPU 2 ms, of which 1000 x 100 ns is entry/exit: the rest is work kept
    assert base.syscall_work_seconds == pytest.approx(0.002 - 1_000 * 100e-9)
    assert base.blocked_seconds == pytest.approx(0.002)
    assert base.seconds == pytest.approx(tax.own_work_seconds + base.syscall_work_seconds
                                         + 1_000 * 2e-9 + 0.002)
    assert base.seconds < tax.oncpu_seconds + tax.runqueue_seconds + 0.003
