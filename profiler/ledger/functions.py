"""Per-function totals for the agent: processes come and go, totals only grow.

A process is known by (pid, start time) and attributed once, when the agent
first hears of it (its fork or exec event, or at agent start); a child with no
rule of its own inherits its parent's function. Its counters are cumulative in
the kernel maps; when it exits, its last figures fold into its function and
its map entries go. A function with no live process left keeps its series for
`retention_seconds`, then folds into `_exited`, so host totals stay monotonic
and the number of series stays bounded.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable, Mapping

from profiler.attribution.rules import (
    HOST, INVOCATION_SHAPES, Attribution, ProcessFacts, Rules, WorkloadKind, read_facts,
)
from profiler.system import procfs
from profiler.model import CallStats, Counters, KernelSnapshot, KvmCalls, ProcessSample, calls_growth, merge_calls

EXITED = "_exited"
PENDING_SECONDS = 30.0
OTHER_SYSCALLS = "other"


@dataclass
class _Process:
    pid: int
    start: int
    attribution: Attribution
    depth: int = 0  # 0: started into its function from outside it; 1: a child of such a process; 2: deeper
    event_ns: int = 0  # the kernel time of the event that decided it (0: none)
    last: ProcessSample | None = None
    # What the process had when it was re-attributed to this function: that
    # part stays with the function that exported it, never taken back.
    base: ProcessSample | None = None

    def own(self) -> tuple[Counters, Mapping[str, CallStats], Mapping[str, CallStats], KvmCalls] | None:
        """This process's figures under its current function."""
        last, base = self.last, self.base
        if last is None:
            return None
        if base is None:
            return last.counters, last.syscalls_by_name, last.decompression_by_library, last.kvm
        return (last.counters.growth_since(base.counters), calls_growth(last.syscalls_by_name, base.syscalls_by_name),
                calls_growth(last.decompression_by_library, base.decompression_by_library),
                last.kvm.growth_since(base.kvm))


@dataclass(frozen=True)
class _Pending:
    """A decision taken from a fork or exec event, before the process shows in the maps."""

    attribution: Attribution
    decided_at: float  # the agent's clock (expiry)
    event_ns: int  # the kernel's timestamp of the event it came from
    depth: int = 0


@dataclass
class _Function:
    name: str
    kind: WorkloadKind
    memory_mb: int | None
    counters: Counters = field(default_factory=Counters)  # of exited processes
    syscalls: dict[str, CallStats] = field(default_factory=dict)
    decompression: dict[str, CallStats] = field(default_factory=dict)
    kvm: KvmCalls = field(default_factory=KvmCalls)  # of exited processes
    live: set[int] = field(default_factory=set)
    idle_since: float | None = None
    started: int = 0  # processes ever attributed to it
    # Invocations, counted where a rule says how they show (else None).
    invocations: int | None = None
    # Exported so far (a scrape never sees a counter go down) and the
    # syscall names exported under their own label (sticky, at most K).
    exposed: Counters = field(default_factory=Counters)
    other_shown: CallStats = field(default_factory=CallStats)  # `other` as last exported
    # The last view, while nothing of the function changed (most functions
    # are idle at any moment: their view is not rebuilt every fold).
    cached: FunctionView | None = None


@dataclass(frozen=True)
class FunctionView:
    """One function's cumulative figures at one moment (what a scrape exports)."""

    function: str
    kind: WorkloadKind
    memory_mb: int | None
    processes: int
    counters: Counters
    syscalls_by_name: Mapping[str, CallStats]
    decompression_by_library: Mapping[str, CallStats]
    processes_started: int = 0
    kvm: KvmCalls = field(default_factory=KvmCalls)
    invocations: int | None = None  # None: no rule says how its invocations show


class Aggregator:
    def __init__(self, rules: Rules, retention_seconds: float = 300.0, top_syscalls: int = 6,
                 facts: Callable[[int], ProcessFacts | None] = read_facts,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.rules = rules
        self.retention_seconds = retention_seconds
        self.top_syscalls = top_syscalls
        self._facts = facts
        self._clock = clock
        self._processes: dict[int, _Process] = {}
        self._functions: dict[str, _Function] = {}
        # Decisions taken at fork for children not yet seen in the maps.
        self._pending: dict[int, _Pending] = {}
        # The decision of a pid's last owner, when the pid was reused before
        # that owner showed in the maps (its entry comes marked superseded).
        self._predecessor: dict[int, _Pending] = {}
        # Pids whose process was retired, and when: a superseded entry of one
        # of these is its leader's remainder, not a process of its own.
        self._retired_at: dict[int, float] = {}

    # -- attribution ---------------------------------------------------------
    def _decide(self, pid: int, parent: int | None, facts: ProcessFacts | None) -> Attribution:
        """The rules on the process's facts; with no rule of its own, its parent's function."""
        found = self.rules.attribute(facts) if facts is not None else None
        if found is None or found.function == HOST:
            if parent in self._processes:
                found = self._processes[parent].attribution  # children inherit
            elif parent is not None and parent in self._pending:
                found = self._pending[parent].attribution
        found = found or Attribution(HOST, WorkloadKind.PROCESS)
        # A function's memory size is taken from its first process: no cgroup
        # read for the others.
        if found.memory_mb is None and facts is not None and found.function not in self._functions:
            found = dataclasses.replace(found, memory_mb=cgroup_memory_mb(pid))
        return found

    def _depth(self, parent: int | None, function: str) -> int:
        """How far below the process that entered `function` a child of `parent` is."""
        known = self._processes.get(parent) if parent is not None else None
        if known is not None:
            return min(2, known.depth + 1) if known.attribution.function == function else 0
        pending = self._pending.get(parent) if parent is not None else None
        if pending is not None and pending.attribution.function == function:
            return min(2, pending.depth + 1)
        return 0

    def _attribute(self, pid: int, parent: int | None, start: int,
                   facts: ProcessFacts | None = None, depth: int | None = None) -> _Process:
        facts = facts or self._facts(pid)
        found = self._decide(pid, parent, facts)
        depth = self._depth(parent, found.function) if depth is None else depth
        return self._register(pid, facts.start_time if facts else start, found, depth)

    def _register(self, pid: int, start: int, found: Attribution, depth: int = 0, event_ns: int = 0) -> _Process:
        proc = _Process(pid, start, found, depth, event_ns=event_ns)
        self._processes[pid] = proc
        fn = self._functions.get(found.function)
        if fn is None:
            fn = self._functions[found.function] = _Function(found.function, found.kind, found.memory_mb)
        fn.live.add(pid)
        fn.started += 1
        if found.invocations is not None:
            hit = INVOCATION_SHAPES[found.invocations] == depth
            fn.invocations = (fn.invocations or 0) + hit
        fn.idle_since = None
        fn.cached = None
        return proc

    def seed(self, pids: Iterable[tuple[int, int | None]]) -> None:
        """Attribute processes that already ran when the agent started (pid, parent)."""
        pending = dict(pids)
        # Parents first, so children can inherit.
        for pid in sorted(pending, key=lambda p: (pending[p] in pending, p)):
            if pid not in self._processes:
                self._attribute(pid, pending[pid], 0)

    def pin(self, pid: int, function: str) -> None:
        """Put a process under a function of its own, whatever the rules say
        (the agent itself: its map reads are not the host's tax)."""
        known = self._processes.get(pid)
        if known is not None:
            self._retire(known)
        self._register(pid, 0, Attribution(function, WorkloadKind.PROCESS))

    def live_processes(self) -> dict[str, int]:
        """Live processes per function (cheap: no view is built)."""
        return {fn.name: len(fn.live) for fn in self._functions.values()}

    def knows(self, pid: int) -> bool:
        return pid in self._processes

    def on_fork(self, child: int, parent: int, ts_ns: int) -> None:
        """Decide now; the child counts once it shows up in the maps.

        Until it execs, a child is its parent's copy (the same command line,
        environment and cgroup): it takes the parent's decision without a
        /proc read, and its exec, if any, decides again. Only a child of a
        process the agent knows nothing of is read from /proc."""
        earlier = self._pending.get(child)
        known = self._processes.get(child)
        if (earlier is not None and earlier.event_ns > ts_ns) or (known is not None and known.event_ns > ts_ns):
            # Events come per CPU, not in order: the child's exec, later in
            # time, was heard first and decided already.
            return
        # A pid still known here was reused: its last owner stays until its
        # exited sample comes; the new owner waits in _pending meanwhile (a
        # last owner that never showed in the maps keeps its decision aside).
        if earlier is not None:
            self._predecessor[child] = earlier
        found = self._parents_decision(parent)
        if found is None:
            facts = self._facts(child)
            if facts is not None and facts.tgid != child:
                return  # a thread (the lost-fork stand-in passes any pid): its process is attributed already
            found = self._decide(child, parent, facts)
        self._pending[child] = _Pending(found, self._clock(), ts_ns, self._depth(parent, found.function))

    def _parents_decision(self, parent: int) -> Attribution | None:
        known = self._processes.get(parent)
        if known is not None:
            return known.attribution
        pending = self._pending.get(parent)
        return pending.attribution if pending is not None else None

    def on_exec(self, pid: int, exec_env: Mapping[str, str] | None = None, ts_ns: int = 0) -> None:
        """A new program: a rule may now name it (the command line changed).

        exec_env is what the probe read from execve's envp: it still names the
        function when the process is already gone from /proc."""
        proc = self._current(pid)
        by_env = self.rules.decide_by_env(exec_env) if exec_env else None
        if by_env is not None:
            self._on_exec_decided(pid, proc, by_env, ts_ns)
            return
        facts = self._facts(pid)
        if exec_env:
            # An exiting process's /proc environ is already empty: trust envp.
            base = facts or ProcessFacts(pid, 0, pid, "", "", "", {})
            facts = dataclasses.replace(base, environ={**base.environ, **exec_env})
            if proc is None:
                found = self.rules.attribute(facts)
                if found.function != HOST:
                    self._set_pending(pid, _Pending(found, self._clock(), ts_ns, self._kept_depth(pid, found)))
                    return
        if facts is None:
            return
        found = self.rules.attribute(facts)
        if proc is None:
            pending = self._pending.get(pid)
            if pending is not None and found.function == HOST:
                return  # keep what it inherited at fork
            depth = self._kept_depth(pid, found)
            if pid in self._processes:
                # A reused pid whose last owner is still known: decided now,
                # claimed once that owner's exited sample has retired it.
                self._set_pending(pid, _Pending(self._decide(pid, None, facts), self._clock(), ts_ns, depth))
                return
            self._pending.pop(pid, None)
            self._attribute(pid, None, 0, facts, depth)
        elif found.function != HOST and found.function != proc.attribution.function:
            # Renamed by its new program: what it did so far stays with the
            # function that exported it; the new one counts from here on.
            self._retire(proc)
            moved = self._attribute(pid, None, proc.start, facts)
            moved.last = moved.base = proc.last

    def _on_exec_decided(self, pid: int, proc: _Process | None, found: Attribution, ts_ns: int) -> None:
        """An exec the first rule decided from envp alone (no /proc read)."""
        if found.memory_mb is None and found.function not in self._functions:
            found = dataclasses.replace(found, memory_mb=cgroup_memory_mb(pid))
        if proc is None:
            self._set_pending(pid, _Pending(found, self._clock(), ts_ns, self._kept_depth(pid, found)))
        elif found.function != proc.attribution.function:
            self._retire(proc)  # renamed: as in on_exec
            moved = self._register(pid, proc.start, found, 0, ts_ns)
            moved.last = moved.base = proc.last

    def _current(self, pid: int) -> _Process | None:
        """The process known by pid, unless a newer one was forked under it
        (a reused pid): that one is still pending, and events are its."""
        proc = self._processes.get(pid)
        pending = self._pending.get(pid)
        if proc is not None and pending is not None and pending.event_ns > proc.event_ns:
            return None
        return proc

    def _set_pending(self, pid: int, decided: _Pending) -> None:
        """A decision from an exec: an event older than the pending decision
        (events come per CPU, not in order) is the pid's last owner's."""
        current = self._pending.get(pid)
        if current is not None and current.event_ns > decided.event_ns:
            before = self._predecessor.get(pid)
            if before is None or before.event_ns <= decided.event_ns:
                self._predecessor[pid] = decided
            return
        self._pending[pid] = decided

    def _kept_depth(self, pid: int, found: Attribution) -> int:
        """An exec that keeps the function its fork decided keeps the depth too."""
        pending = self._pending.get(pid)
        return pending.depth if pending is not None and pending.attribution.function == found.function else 0

    # -- figures ---------------------------------------------------------------
    def update(self, snapshot: KernelSnapshot) -> list[int]:
        """Take a snapshot of the maps; return exited pids whose entries can go."""
        done: list[int] = []
        for sample in snapshot.processes:
            proc = self._processes.get(sample.pid)
            if proc is None:
                # A superseded entry unknown here is a last owner's remainder
                # (its leader's final switch-out after its entry was read):
                # never the pending decision, which is the new owner's.
                proc = self._claim(sample.pid) if not sample.superseded else self._claim_superseded(sample.pid)
            if proc.last != sample:
                self._functions[proc.attribution.function].cached = None
            proc.last = sample
            if sample.exited:
                self._retire(proc)
                done.append(sample.pid)
        now = self._clock()
        for waiting in (self._pending, self._predecessor):
            for pid, pending in list(waiting.items()):
                if now - pending.decided_at > PENDING_SECONDS:
                    del waiting[pid]  # a thread, or a process that never ran on our watch
        for pid, at in list(self._retired_at.items()):
            if now - at > PENDING_SECONDS:
                del self._retired_at[pid]
        for fn in list(self._functions.values()):
            if fn.name == EXITED or fn.live:
                continue
            if fn.idle_since is None:
                fn.idle_since = now
            elif now - fn.idle_since >= self.retention_seconds:
                self._fold_into_exited(fn)
        return done

    def _claim(self, pid: int) -> _Process:
        """A process first seen in the maps: the fork-time decision, else decide now."""
        pending = self._pending.pop(pid, None)
        if pending is None:
            return self._attribute(pid, None, 0)
        return self._register(pid, 0, pending.attribution, pending.depth, pending.event_ns)

    def _claim_superseded(self, pid: int) -> _Process:
        """A last owner first seen when its pid was already reused: its own
        decision if one was set aside, else host (a remainder of a process
        already read: its leader's final switch-out)."""
        before = self._predecessor.pop(pid, None)
        if before is None and pid not in self._retired_at:
            # The maps were read after the new owner's fork marked the entry
            # but before its fork event came: the pending decision is still
            # the last owner's own (the new owner's fork finds none later).
            before = self._pending.pop(pid, None)
        if before is None:
            return self._register(pid, 0, Attribution(HOST, WorkloadKind.PROCESS))
        return self._register(pid, 0, before.attribution, before.depth, before.event_ns)

    def _retire(self, proc: _Process) -> None:
        fn = self._functions[proc.attribution.function]
        own = proc.own()
        if own is not None:
            _absorb(fn, *own)
        fn.live.discard(proc.pid)
        fn.cached = None
        del self._processes[proc.pid]
        self._retired_at[proc.pid] = self._clock()

    def _fold_into_exited(self, fn: _Function) -> None:
        sink = self._functions.get(EXITED)
        if sink is None:
            sink = self._functions[EXITED] = _Function(EXITED, WorkloadKind.PROCESS, None)
        # At least what its series showed, so the host's sum never goes down.
        exported = Counters.of_raw(tuple(map(max, fn.counters.raw, fn.exposed.raw)))
        _absorb(sink, exported, fn.syscalls, fn.decompression, fn.kvm)
        sink.started += fn.started
        if fn.invocations is not None:
            sink.invocations = (sink.invocations or 0) + fn.invocations
        sink.cached = None
        del self._functions[fn.name]

    def view(self) -> list[FunctionView]:
        views = []
        for fn in self._functions.values():
            if fn.cached is not None:
                views.append(fn.cached)
                continue
            counters, syscalls, decomp, kvm = fn.counters, dict(fn.syscalls), dict(fn.decompression), fn.kvm
            for pid in fn.live:
                own = self._processes[pid].own()
                if own is not None:
                    counters = counters + own[0]
                    _accumulate(syscalls, own[1])
                    _accumulate(decomp, own[2])
                    kvm = kvm + own[3]
            # Never less than what a scrape already saw.
            fn.exposed = Counters.of_raw(tuple(map(max, counters.raw, fn.exposed.raw)))
            fn.cached = FunctionView(fn.name, fn.kind, fn.memory_mb, len(fn.live), fn.exposed,
                                     self._top_k(fn, syscalls), decomp, fn.started, kvm, fn.invocations)
            views.append(fn.cached)
        return views

    def _top_k(self, fn: _Function, syscalls: Mapping[str, CallStats]) -> dict[str, CallStats]:
        """The function's top K syscall names and `other`. A name that rises
        into the top K leaves `other`: `other` holds at what it showed (it
        may then count that name's earlier calls twice, never fewer)."""
        kept = top_k(syscalls, self.top_syscalls)
        other = kept.get(OTHER_SYSCALLS)
        if other is not None or fn.other_shown.count:
            shown = fn.other_shown
            other = other or CallStats()
            fn.other_shown = CallStats(max(other.count, shown.count), max(other.ns, shown.ns),
                                       max(other.cpu_ns, shown.cpu_ns))
            kept[OTHER_SYSCALLS] = fn.other_shown
        return kept

    def function_of(self, pid: int) -> str | None:
        proc = self._processes.get(pid)
        return proc.attribution.function if proc else None


def _absorb(fn: _Function, counters: Counters, syscalls: Mapping[str, CallStats],
            decompression: Mapping[str, CallStats], kvm: KvmCalls | None = None) -> None:
    """Add finished figures to a function's own (exited processes, folded functions)."""
    fn.counters = fn.counters + counters
    fn.kvm = fn.kvm + (kvm or KvmCalls())
    fn.syscalls = merge_calls(fn.syscalls, syscalls)
    fn.decompression = merge_calls(fn.decompression, decompression)


def _accumulate(into: dict[str, CallStats], more: Mapping[str, CallStats]) -> None:
    for name, stats in more.items():
        have = into.get(name)
        into[name] = stats if have is None else have + stats


def top_k(calls: Mapping[str, CallStats], k: int) -> dict[str, CallStats]:
    """The k most frequent names plus `other` (bounded label values)."""
    ordered = sorted(calls.items(), key=lambda item: (-item[1].count, item[0]))
    kept = dict(ordered[:k])
    rest = CallStats()
    for _name, stats in ordered[k:]:
        rest = rest + stats
    if rest.count:
        kept[OTHER_SYSCALLS] = kept.get(OTHER_SYSCALLS, CallStats()) + rest
    return kept


def cgroup_memory_mb(pid: int) -> int | None:
    """The memory limit of the process's cgroup (v2 memory.max or v1 limit), if any."""
    return procfs.DEFAULT.memory_limit_mb(pid)
