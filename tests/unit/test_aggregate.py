"""Per-function totals under churn (no kernel): inheritance, exit folding, bounds."""

from __future__ import annotations

from pathlib import Path

from profiler.ledger.functions import EXITED, Aggregator, top_k
from profiler.attribution.rules import ProcessFacts, load_rules
from profiler.figures import SYSCALLS
from profiler.model import CallStats, Counters, KernelSnapshot, ProcessSample

FACTS: dict[int, ProcessFacts] = {}


def _facts(pid: int) -> ProcessFacts | None:
    return FACTS.get(pid)


def _proc(pid: int, fn: str | None, comm: str = "python3") -> None:
    FACTS[pid] = ProcessFacts(pid=pid, start_time=pid * 10, tgid=pid, comm=comm, cmdline=comm, cgroup="/",
                              environ={"AWS_LAMBDA_FUNCTION_NAME": fn} if fn else {})


def _sample(pid: int, syscalls: int, exited: bool = False) -> ProcessSample:
    return ProcessSample(pid=pid, comm="x", workload=1, exited=exited, counters=Counters(syscalls=syscalls),
                         syscalls_by_name={"read": CallStats(syscalls, syscalls)})


def _snap(*samples: ProcessSample) -> KernelSnapshot:
    return KernelSnapshot(processes=samples, map_update_failures={}, taken_at_ns=0)


class Clock:
    now = 0.0

    def __call__(self) -> float:
        return self.now


def _totals(agg: Aggregator) -> dict[str, int]:
    return {v.function: v.counters[SYSCALLS] for v in agg.view()}


def test_children_inherit_and_totals_stay_monotonic_across_exits() -> None:
    FACTS.clear()
    clock = Clock()
    agg = Aggregator(load_rules(None), retention_seconds=10, facts=_facts, clock=clock)
    _proc(100, "resize")
    agg.on_fork(100, 1, 0)
    _proc(101, None)  # a child with no rule of its own
    agg.on_fork(101, 100, 0)
    agg.on_fork(102, 100, 0)  # gone before /proc could be read: still the parent's
    agg.update(_snap(_sample(100, 5), _sample(101, 7), _sample(102, 1)))
    assert _totals(agg)["resize"] == 13
    done = agg.update(_snap(_sample(100, 6), _sample(101, 9, exited=True), _sample(102, 2, exited=True)))
    assert sorted(done) == [101, 102]
    assert _totals(agg)["resize"] == 17
    # the maps dropped 101 and 102; totals do not go down
    assert _totals(agg)["resize"] == 17 == sum(_totals(agg).values()) - _totals(agg).get("host", 0)


def test_idle_function_folds_into_exited_after_retention() -> None:
    FACTS.clear()
    clock = Clock()
    agg = Aggregator(load_rules(None), retention_seconds=10, facts=_facts, clock=clock)
    _proc(200, "thumbs")
    agg.on_fork(200, 1, 0)
    agg.update(_snap(_sample(200, 4, exited=True)))
    assert _totals(agg) == {"thumbs": 4}
    clock.now = 5
    agg.update(_snap())
    assert "thumbs" in _totals(agg)
    clock.now = 16
    agg.update(_snap())
    assert _totals(agg) == {EXITED: 4}


def test_reused_pid_is_a_new_process() -> None:
    FACTS.clear()
    agg = Aggregator(load_rules(None), facts=_facts, clock=Clock())
    _proc(300, "a")
    agg.on_fork(300, 1, 0)
    agg.update(_snap(_sample(300, 3, exited=True)))
    _proc(300, "b")  # same pid, new process
    agg.on_fork(300, 1, 99)
    agg.update(_snap(_sample(300, 1)))
    assert _totals(agg) == {"a": 3, "b": 1}


def test_a_pid_reused_before_its_last_owner_showed_keeps_both_decisions() -> None:
    """The probes keep a reused pid's two owners apart (the old one's entry
    comes marked superseded); their decisions are kept apart here, also when
    the old owner never showed in the maps and when its exec event is heard
    after the new owner's fork (per-CPU buffers)."""
    FACTS.clear()
    agg = Aggregator(load_rules(None), facts=_facts, clock=Clock())
    agg.on_fork(600, 1, 10)  # the old owner, its exec not heard yet
    agg.on_fork(600, 1, 30)  # the new owner: the pid was reused
    agg.on_exec(600, {"AWS_LAMBDA_FUNCTION_NAME": "new"}, 40)
    agg.on_exec(600, {"AWS_LAMBDA_FUNCTION_NAME": "old"}, 20)  # heard late: the old owner's
    old = ProcessSample(pid=600, comm="x", workload=1, exited=True, counters=Counters(syscalls=3),
                        superseded=True)
    assert agg.update(_snap(old, _sample(600, 5))) == [600]
    assert _totals(agg) == {"old": 3, "new": 5}
    agg.update(_snap(_sample(600, 7, exited=True)))
    assert _totals(agg) == {"old": 3, "new": 7}


def test_a_last_owner_read_before_the_new_owners_fork_is_heard_keeps_its_decision() -> None:
    """The maps can be read after a new owner's fork marked the old entry
    superseded but before that fork's event came (the fold polls events, then
    reads maps): the old owner's pending decision is still its own."""
    FACTS.clear()
    agg = Aggregator(load_rules(None), facts=_facts, clock=Clock())
    agg.on_fork(700, 1, 10)
    agg.on_exec(700, {"AWS_LAMBDA_FUNCTION_NAME": "old"}, 20)
    old = ProcessSample(pid=700, comm="x", workload=1, exited=True, counters=Counters(syscalls=3),
                        superseded=True)
    assert agg.update(_snap(old)) == [700]
    agg.on_fork(700, 1, 30)  # the new owner's events, heard at the next fold
    agg.on_exec(700, {"AWS_LAMBDA_FUNCTION_NAME": "new"}, 40)
    agg.update(_snap(_sample(700, 8, exited=True)))
    assert _totals(agg) == {"old": 3, "new": 8}


def test_a_remainder_of_a_process_already_read_stays_apart() -> None:
    """A leader's final switch-out after its entry was read comes back as a
    superseded entry once the pid is reused: never the new owner's."""
    FACTS.clear()
    agg = Aggregator(load_rules(None), facts=_facts, clock=Clock())
    agg.on_fork(710, 1, 10)
    agg.on_exec(710, {"AWS_LAMBDA_FUNCTION_NAME": "old"}, 20)
    agg.update(_snap(_sample(710, 3, exited=True)))
    agg.on_fork(710, 1, 30)
    agg.on_exec(710, {"AWS_LAMBDA_FUNCTION_NAME": "new"}, 40)
    remainder = ProcessSample(pid=710, comm="x", workload=1, exited=True, counters=Counters(syscalls=1),
                              superseded=True)
    agg.update(_snap(remainder, _sample(710, 5, exited=True)))
    assert _totals(agg) == {"old": 3, "new": 5, "host": 1}


def test_exec_can_rename_a_process() -> None:
    FACTS.clear()
    agg = Aggregator(load_rules(None), facts=_facts, clock=Clock())
    _proc(400, None, comm="bash")
    agg.on_fork(400, 1, 0)
    _proc(400, "late-named")
    agg.on_exec(400)
    agg.update(_snap(_sample(400, 2)))
    assert _totals(agg)["late-named"] == 2 and _totals(agg).get("host", 0) == 0


def test_top_k_keeps_bounded_names() -> None:
    calls = {f"sys{i}": CallStats(i, i) for i in range(1, 30)}
    kept = top_k(calls, 5)
    assert len(kept) == 6 and kept["other"].count == sum(range(1, 25))


def test_series_stay_bounded_at_1000_functions() -> None:
    FACTS.clear()
    agg = Aggregator(load_rules(None), top_syscalls=7, facts=_facts, clock=Clock())
    samples = []
    for i in range(1000):
        pid = 10_000 + i
        _proc(pid, f"fn-{i}")
        agg.on_fork(pid, 1, 0)
        samples.append(ProcessSample(pid=pid, comm="x", workload=1, exited=False, counters=Counters(syscalls=50),
                                     syscalls_by_name={f"s{j}": CallStats(1, 1) for j in range(50)}))
    agg.update(_snap(*samples))
    from prometheus_client.parser import text_string_to_metric_families

    from profiler.output.exposition import render_functions
    from profiler.tax.compute import HostCosts
    from profiler.tax.function_tax import TaxLedger

    taxed = TaxLedger(HostCosts(1e-6, 1e-6, 1e-7, 1e-9), 0.0000166667, 128).update(agg.view(), {})
    text = render_functions(taxed).decode()
    # The hand-rendered exposition parses as Prometheus text.
    families = {f.name for f in text_string_to_metric_families(text)}
    assert {"fntax_syscalls", "fntax_tax_seconds", "fntax_syscalls_by_name"} <= families
    series = [line for line in text.splitlines() if line and not line.startswith("#")]
    assert len(series) <= 31_000, len(series)  # README: 31 series per function at most with the default top K
    assert 'fntax_syscalls_by_name_total{function="fn-7",kind="process",syscall="other"}' in text


def test_threads_are_not_processes() -> None:
    FACTS.clear()
    clock = Clock()
    agg = Aggregator(load_rules(None), facts=_facts, clock=clock)
    _proc(500, "svc")
    agg.on_fork(500, 1, 0)
    FACTS[501] = ProcessFacts(pid=501, start_time=5000, tgid=500, comm="python3", cmdline="python3", cgroup="/",
                              environ={})
    agg.on_fork(501, 500, 0)  # a thread of 500
    agg.update(_snap(_sample(500, 3)))
    views = {v.function: v for v in agg.view()}
    assert views["svc"].processes == 1
    clock.now = 100  # an unclaimed fork-time decision expires
    agg.update(_snap(_sample(500, 4)))
    assert not agg._pending


def test_an_exec_heard_before_its_fork_keeps_its_function() -> None:
    # Events come per CPU: the child's exec (later in time) can arrive first.
    FACTS.clear()
    agg = Aggregator(load_rules(None), facts=_facts, clock=Clock())
    _proc(300, None, comm="bash")  # the spawner, no function
    agg.on_fork(300, 1, 1_000)
    agg.on_exec(301, {"AWS_LAMBDA_FUNCTION_NAME": "thumbs"}, ts_ns=2_000)  # gone from /proc already
    agg.on_fork(301, 300, ts_ns=1_500)  # its fork, heard late
    agg.update(_snap(_sample(300, 1), _sample(301, 4, exited=True)))
    assert _totals(agg).get("thumbs") == 4


def test_a_renamed_process_never_takes_back_what_was_exported() -> None:
    FACTS.clear()
    agg = Aggregator(load_rules(None), facts=_facts, clock=Clock())
    _proc(400, None, comm="bash")
    agg.on_fork(400, 1, 0)
    agg.update(_snap(_sample(400, 10)))
    before = _totals(agg)["host"]
    _proc(400, "resize")  # it execs into the function
    agg.on_exec(400, None, ts_ns=5)
    agg.update(_snap(_sample(400, 25)))
    after = _totals(agg)
    assert after["host"] >= before == 10
    assert after["resize"] == 15  # counted from the rename on
    agg.update(_snap(_sample(400, 30, exited=True)))
    assert _totals(agg)["host"] == 10 and _totals(agg)["resize"] == 20


def test_syscall_series_never_shrink_as_names_move_in_and_out_of_the_top_k() -> None:
    FACTS.clear()
    agg = Aggregator(load_rules(None), top_syscalls=2, facts=_facts, clock=Clock())
    _proc(500, "fn")
    agg.on_fork(500, 1, 0)

    def sample(counts: dict[str, int]) -> ProcessSample:
        return ProcessSample(pid=500, comm="x", workload=1, exited=False, counters=Counters(syscalls=sum(counts.values())),
                             syscalls_by_name={k: CallStats(v, v) for k, v in counts.items()})

    seen: list[dict[str, int]] = []
    for counts in ({"read": 5, "write": 4, "open": 1}, {"read": 5, "write": 4, "open": 50},
                   {"read": 6, "write": 9, "open": 90, "close": 70}):
        agg.update(_snap(sample(counts)))
        view = next(v for v in agg.view() if v.function == "fn")
        seen.append({name: stats.count for name, stats in view.syscalls_by_name.items()})
    for earlier, later in zip(seen, seen[1:]):
        for name, count in earlier.items():
            # A name may leave the top K (its series ends); one that stays never shrinks.
            assert later.get(name, count) >= count, (earlier, later)
    assert set(seen[-1]) == {"open", "close", "other"}


def _invocations(agg: Aggregator) -> dict[str, int | None]:
    return {v.function: v.invocations for v in agg.view()}


def test_invocations_count_the_processes_a_rule_says_are_invocations(tmp_path: Path) -> None:
    """`invocations: process` counts processes started into the function from
    outside; `child` counts their children (a runtime's per-event worker);
    grandchildren and functions whose rule says nothing count none."""
    FACTS.clear()
    rules = tmp_path / "rules.yaml"
    rules.write_text("rules:\n  - env: PER_PROCESS\n    invocations: process\n"
                     "  - env: PER_CHILD\n    invocations: child\n  - env: AWS_LAMBDA_FUNCTION_NAME\n")
    agg = Aggregator(load_rules(rules), facts=_facts, clock=Clock())

    def start(pid: int, parent: int, env: dict[str, str]) -> None:
        FACTS[pid] = ProcessFacts(pid=pid, start_time=pid, tgid=pid, comm="w", cmdline="w", cgroup="/", environ=env)
        agg.on_fork(pid, parent, pid)

    for event in range(3):  # three events, each a fresh process with a child (a pipe's second stage)
        start(10 + 2 * event, 1, {"PER_PROCESS": "cgi"})
        start(11 + 2 * event, 10 + 2 * event, {"PER_PROCESS": "cgi"})
    start(50, 1, {"PER_CHILD": "runtime"})  # the runtime, then one worker per event
    for worker in range(4):
        start(51 + worker, 50, {"PER_CHILD": "runtime"})
    start(60, 51, {"PER_CHILD": "runtime"})  # a worker's own child: not an event
    start(70, 1, {"AWS_LAMBDA_FUNCTION_NAME": "silent"})
    agg.update(_snap(*(_sample(pid, 1) for pid in (10, 11, 12, 13, 14, 15, 50, 51, 52, 53, 54, 60, 70))))
    assert _invocations(agg) == {"cgi": 3, "runtime": 4, "silent": None, "host": None} or \
        _invocations(agg) == {"cgi": 3, "runtime": 4, "silent": None}
    # Folded into _exited after retention, the count stays in the host's sum.
    agg.update(_snap(*(_sample(pid, 1, exited=True) for pid in (10, 11, 12, 13, 14, 15))))
    assert _invocations(agg)["cgi"] == 3


def test_forks_and_env_named_execs_need_no_proc_reads() -> None:
    """A child is its parent's copy until it execs, and an exec the first
    (env) rule decides from envp needs nothing else: under churn the agent
    reads /proc only for processes whose parent it never heard of."""
    FACTS.clear()
    reads: list[int] = []

    def counted(pid: int) -> ProcessFacts | None:
        reads.append(pid)
        return FACTS.get(pid)

    agg = Aggregator(load_rules(None), facts=counted, clock=Clock())
    _proc(10, None, comm="spawner")
    agg.seed([(10, 1)])
    assert reads == [10]
    for pid in range(100, 110):
        agg.on_fork(pid, 10, pid)  # the spawner's copy: host, like the spawner
        agg.on_exec(pid, {"AWS_LAMBDA_FUNCTION_NAME": "fn-env"}, pid + 1)
        agg.on_fork(pid + 100, pid, pid + 2)  # the function's own child
    assert reads == [10]
    agg.update(_snap(*(_sample(pid, 1) for pid in [*range(100, 110), *range(200, 210)])))
    assert _totals(agg) == {"fn-env": 20, "host": 0} or _totals(agg) == {"fn-env": 20}
    # A fork from a parent never heard of is read from /proc.
    agg.on_fork(300, 299, 400)
    assert reads == [10, 300]
