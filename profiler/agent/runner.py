"""`fntax agent`: the probes system-wide, attribution per function, Prometheus out.

The continuous way of driving the pipeline: probes (every process tracked,
fork/exec events on) -> attribution at fork/exec (profiler.ledger.functions) ->
per-function totals -> tax -> the exporter's collector. The main thread polls
events and folds map snapshots; the HTTP thread only reads a view.
"""

from __future__ import annotations

import gc
import os
import signal
import threading
import time
from dataclasses import dataclass, replace
from types import FrameType
from typing import Callable, Mapping

import psutil
from prometheus_client import generate_latest
from prometheus_client.registry import CollectorRegistry

from profiler.agent.desk import CaptureDesk, DeskServer, open_socket
from profiler.agent.privileges import drop_after_load
from wsgiref.simple_server import WSGIServer

from profiler.agent.webserver import bind, load_web_config, start
from profiler.attribution.rules import Rules, load_rules
from profiler.bpf.events import EventType, ProcessEvent
from profiler.bpf.probes import KernelProbes, ProbeOptions, effective_families
from profiler.ledger.functions import Aggregator
from profiler.model import KernelSnapshot
from profiler.system import procfs
from profiler.output.exposition import AgentSource, FntaxCollector, SelfStats, Shown, render_new_at_zero
from profiler.output.wire import DEFAULT_SOCKET
from profiler.tax.calibrate import ensure_calibration, host_costs
from profiler.tax.cost import price_table
from profiler.tax.function_tax import TaxedFunction, TaxLedger


@dataclass(frozen=True)
class AgentSettings:
    listen: str = "127.0.0.1:9636"
    rules_path: str | None = None
    web_config_path: str | None = None
    retention_seconds: float = 300.0
    top_syscalls: int = 6
    interval_seconds: float = 1.0
    prices: str = "x86_64"
    default_memory_mb: int = 128
    bpf_stats: bool = True
    # BPF statistics double each probe's cost, so the agent samples them:
    # on for stats_window seconds in every stats_period.
    stats_period_seconds: float = 30.0
    stats_window_seconds: float = 1.0
    max_procs: int = 16384
    max_tasks: int = 65536
    max_proc_syscalls: int = 65536
    event_pages: int | None = None  # perf buffer pages per CPU (None: FNTAX_EVENT_PAGES, else 256)
    # Capabilities kept once the probes are loaded (profiler.agent.privileges; None: all).
    keep_capabilities: frozenset[str] | None = None
    # `fntax profile` runs its captures through the agent on this socket (None: off).
    socket_path: str | None = DEFAULT_SOCKET


TASKS_COUNT_EVERY = 10  # folds between two counts of the tasks map
# Seconds between two reads of every live process when no scrape asks for
# one sooner (other folds read only processes that exited: their entries must
# go); well under the ledger's PENDING_SECONDS, so a process first seen is
# claimed while its fork-time decision still waits.
FULL_READ_SECONDS = 10.0
FULL_COLLECTION_EVERY = 10  # folds between two full garbage collections
FULL_WARNING_EVERY = 60.0  # seconds between two warnings about full maps
AGENT_FUNCTION = "_fntax_agent"  # the agent's own process, published under this name


class Agent:
    def __init__(self, settings: AgentSettings, say: Callable[[str], None]) -> None:
        self._refreshes = 0
        self._stats_fresh = False
        self._runs: dict[str, tuple[int, int]] | None = None
        self.settings = settings
        self.say = say
        # Check every input before loading anything.
        self.rules: Rules = load_rules(settings.rules_path)
        self.web_config = load_web_config(settings.web_config_path)
        self.prices = price_table(settings.prices)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._reload = threading.Event()
        self._aggregator = Aggregator(self.rules, settings.retention_seconds, settings.top_syscalls)
        self._view: list[TaxedFunction] = []
        # The aggregator changes on the main thread (events, folds) and is
        # read at scrape time: views and tax are built only when a scrape
        # asks and something changed since (a scrape is rarer than a fold).
        self._state = threading.RLock()
        # Reading and pruning the probes' maps: the fold here, captures run
        # through the agent (profiler.agent.desk) from their own threads.
        self._maps = threading.RLock()
        self._desk: CaptureDesk | None = None
        self._changed = False
        # A view built ahead of the next expected scrape (by the folding
        # thread), served by it as it is: the scrape then only renders.
        self._ahead = False
        self._ahead_at = 0.0
        self._scraped_at: list[float] = []
        self._scrapes = 0
        self._probe_mean_ns: Mapping[str, float] = {}
        self._self: SelfStats = SelfStats({}, {}, {}, {}, {})
        self.probes: KernelProbes | None = None
        self._body: _Body | None = None  # the per-function families, rendered for a view
        self._render_lock = threading.Lock()  # one render at a time (the loop renders ahead of a scrape)
        self._shown: Shown = {}  # per-function series already served (new ones go out at 0 first)
        # Live processes' figures are as of the last full read (a light fold
        # reads only processes that exited).
        self._full_read_at = 0.0
        self._ahead_build_seconds = 0.0  # a full fold, view and render, the last time one was built ahead
        self._lost_seen = 0
        self._failed_warned = 0
        self._warned_at = -FULL_WARNING_EVERY

    # -- the collector reads these (HTTP thread) ---------------------------------
    def functions(self) -> list[TaxedFunction]:
        """Every function's figures and tax now (built here if anything changed since the last call)."""
        with self._state:
            if self._changed:
                self._changed = False
                view = self._tax.update(self._aggregator.view(), self._probe_mean_ns)
                with self._lock:
                    self._view = view
        with self._lock:
            return self._view

    def self_stats(self) -> SelfStats:
        with self._lock:
            return self._self

    def metrics_body(self) -> bytes:
        """One scrape: per-function families (re-rendered only when the view changed) + self-metrics."""
        started = time.perf_counter()
        with self._lock:
            now = time.monotonic()
            # Never older than one fold: a scrape later than expected builds afresh.
            ahead = self._ahead and now - self._ahead_at <= 1.5 * self.settings.interval_seconds
            self._ahead = False
            self._scrapes += 1
            self._scraped_at = [*self._scraped_at[-1:], now]
            stale = now - self._full_read_at > 1.5 * self.settings.interval_seconds
        if not ahead and stale:
            # Unexpected (no steady period yet): live figures are as of the
            # last full read, which is too old: read them now.
            self.refresh(hear_events=False)
        view = self._view if ahead else self.functions()
        with self._render_lock:
            body = self._render(view)
            with self._lock:
                # Served: what it showed is shown. Series it served at 0 go
                # out with their values from the next scrape (render again then).
                self._shown = body.served
                self._body = None if body.fresh else replace(body, shown_from=body.served)
        payload = body.text + generate_latest(self._registry)
        self._source.last_scrape_seconds[0] = time.perf_counter() - started
        return payload

    def _render(self, view: list[TaxedFunction]) -> _Body:
        """The per-function families of a view, for the series served so far (call under _render_lock)."""
        with self._lock:
            body, shown = self._body, self._shown
        if body is not None and body.view is view and body.shown_from is shown:
            return body
        text, served, fresh = render_new_at_zero(view, shown)
        body = _Body(view, shown, text, served, fresh)
        with self._lock:
            self._body = body
        return body

    # -- lifecycle ---------------------------------------------------------------
    def run(self) -> None:
        # The port first: in use, it is one line now, not after the probes load.
        server = bind(self.metrics_body, self.settings.listen, self.web_config)
        desk = open_socket(self.settings.socket_path, self.say) if self.settings.socket_path else None
        try:
            self._run(server, desk)
        finally:
            if desk is not None:
                desk.close()
            server.server_close()

    def _run(self, server: WSGIServer, desk: DeskServer | None) -> None:
        costs = host_costs(ensure_calibration(progress=self.say))
        # Probe costs are measured at load, as for `fntax profile`: the tax
        # layer takes the observer out of the syscall tax the same way.
        options = ProbeOptions(trace_all=True, events=True, exec_env_name=self.rules.exec_env_name(),
                               run_time_stats=False, measure_probe_costs=True, timeline=True,
                               max_procs=self.settings.max_procs,
                               max_tasks=self.settings.max_tasks,
                               max_proc_syscalls=self.settings.max_proc_syscalls)
        self._tax = TaxLedger(costs, self.prices.gb_second, self.settings.default_memory_mb)
        self._source = AgentSource(self.self_stats)
        self._registry = CollectorRegistry()
        self._registry.register(FntaxCollector(self._source))
        self.say("loading probes (system-wide)")
        _tune_gc()
        # At exit the slow half of detaching goes to a helper (as for `fntax
        # profile`): SIGTERM to exit takes the time to stop serving, not the
        # kernel's grace periods for every probe.
        with KernelProbes(options, detach_after_exit=True) as probes:
            self.probes = probes
            probes.open_events(self._on_event, self.settings.event_pages)
            # Before any thread starts: capabilities are per thread.
            if not drop_after_load(self.settings.keep_capabilities, self.say):
                self.settings = replace(self.settings, bpf_stats=False)
            self._aggregator.seed(_running_processes())
            # The agent's own syscalls (its bpf(2) map reads above all) are
            # published under its own name, never as the host's tax.
            self._aggregator.pin(os.getpid(), AGENT_FUNCTION)
            # One fold before serving: the first scrape already holds what
            # happened up to now (the loop's first fold is an interval away).
            self.refresh()
            if desk is not None:
                self._desk = CaptureDesk(probes, self._maps, effective_families(options),
                                         options.extra_decompressors,
                                         fold=lambda: self.refresh(hear_events=False))
                desk.desk = self._desk
                # Only now (after the capability drop: threads keep the set
                # they start with); a client that came earlier waits in the
                # listen queue, and gives up after its hello timeout.
                desk.serve_in_background()
                self.say(f"serving captures on {desk.path}")
            start(server)
            scheme = "https" if self.web_config.tls else "http"
            self.say(f"serving metrics on {scheme}://{self.settings.listen}/metrics")
            previous = {sig: signal.signal(sig, self._signal) for sig in (signal.SIGTERM, signal.SIGINT,
                                                                          signal.SIGHUP)}
            try:
                self._loop(probes)
            finally:
                for sig, handler in previous.items():
                    signal.signal(sig, handler)
                server.shutdown()
                server.server_close()
        self.say("probes detached, agent stopped")

    def _signal(self, signum: int, _frame: FrameType | None) -> None:
        if signum == signal.SIGHUP:
            self._reload.set()
        else:
            self._stop.set()

    def _loop(self, probes: KernelProbes) -> None:
        next_window = time.monotonic() + 2.0
        window_ends: float | None = None
        while not self._stop.is_set():
            if self.settings.bpf_stats:
                now = time.monotonic()
                if window_ends is None and now >= next_window:
                    probes.set_run_time_stats(True)
                    self._stats_fresh = True
                    window_ends = now + self.settings.stats_window_seconds
                elif window_ends is not None and now >= window_ends:
                    probes.set_run_time_stats(False)
                    window_ends = None
                    next_window = now + self.settings.stats_period_seconds
            # Events are handled as they arrive (short-lived processes are
            # attributed while /proc still describes them), and the maps are
            # folded once per interval: a poll returns at the first event, so
            # counting polls instead of time folded dozens of times a second
            # under churn.
            fold_at = time.monotonic() + self.settings.interval_seconds
            while not self._stop.is_set():
                left = fold_at - time.monotonic()
                if left <= 0:
                    break
                probes.poll_events(max(1, min(100, int(left * 1000))))
            if self._reload.is_set():
                self._reload.clear()
                self._reload_rules()
            # Most folds read only the processes that exited (their entries
            # must go); every live one is read before an expected scrape and
            # every FULL_READ_SECONDS.
            scrape_due = self._scrape_due()
            began = time.monotonic()
            self.refresh(full=scrape_due or began - self._full_read_at >= FULL_READ_SECONDS
                         - self.settings.interval_seconds / 2)
            if scrape_due:
                self._build_ahead()
                self._ahead_build_seconds = time.monotonic() - began

    def refresh(self, hear_events: bool = True, full: bool = True) -> None:
        """Fold a map snapshot into the totals and publish a fresh view.

        hear_events=False: from another thread than the loop's (the capture
        desk, a scrape), which must not poll the event buffers the loop
        polls; a process whose events are still unheard is then decided
        from /proc. full=False: only processes that exited are read."""
        assert self.probes is not None
        # Every fork/exec event of a process the snapshot shows must be heard
        # before the snapshot is folded: a process that came and went since
        # the last poll is named by them. Its events were written before it
        # could show in the maps, so polling after the read catches them all.
        with self._maps:
            read_at = time.monotonic()
            # Probe misses: the desk reads them when a capture asks.
            snapshot = self.probes.snapshot(with_misses=False, exited_only=not full)
            if hear_events:
                self.probes.poll_events(0)
            if self._desk is not None:
                self._desk.observe(snapshot)  # before exited processes leave the maps
            with self._state:
                lost = self.probes.events_lost
                if lost != self._lost_seen:
                    self._lost_seen = lost
                    self._stand_in_for_lost_forks(snapshot)
                exited = self._aggregator.update(snapshot)
                self.probes.forget(exited)
                self._probe_mean_ns = snapshot.probe_mean_ns
                self._changed = True
                if full:
                    self._full_read_at = read_at
            # The tasks map is not part of a snapshot: count it now and then (a
            # full read of it per fold cost a fifth of the agent's CPU).
            self._refreshes += 1
            if self._refreshes % TASKS_COUNT_EVERY == 1:
                self.probes.reader.count_entries("tasks")
            entries, capacity = self.probes.map_fill()
        if self._refreshes % FULL_COLLECTION_EVERY == 0:
            gc.collect()  # on a schedule, not when allocations say (see _tune_gc)
        stats = SelfStats(
            probes_attached={probe: len(points) for probe, points in self.probes.attached.points.items()},
            probe_runs=self._probe_runs(),
            map_entries=entries, map_capacity=capacity,
            map_update_failures=dict(snapshot.map_update_failures), events_lost=self.probes.events_lost)
        with self._lock:
            self._self = stats
        self._warn_if_full(stats)

    def _warn_if_full(self, stats: SelfStats) -> None:
        """One line when updates failed since the last warning, at most once a minute."""
        failed = sum(stats.map_update_failures.values())
        now = time.monotonic()
        if failed <= self._failed_warned or now < self._warned_at + FULL_WARNING_EVERY:
            return
        grown = {name: n for name, n in stats.map_update_failures.items() if n}
        fill = ", ".join(f"{name} {stats.map_entries.get(name, 0)}/{stats.map_capacity.get(name, 0)}"
                         for name in sorted(grown) if name in stats.map_capacity)
        self.say(f"warning: BPF map updates failed ({', '.join(f'{k} {v}' for k, v in sorted(grown.items()))} "
                 f"so far; fill {fill or 'n/a'}): figures of the processes left out are low; raise "
                 "--max-processes / --max-proc-syscalls / --max-tasks")
        self._failed_warned, self._warned_at = failed, now

    def _scrape_due(self) -> bool:
        """A scrape is expected before the fold after this one is ready
        (scrapes come at a steady period, unknown until two have come; the
        last build ahead says how long a full fold and render take)."""
        with self._lock:
            if self._ahead or len(self._scraped_at) < 2:
                return False
            last, period = self._scraped_at[-1], self._scraped_at[-1] - self._scraped_at[-2]
        lead = 1.5 * self.settings.interval_seconds + self._ahead_build_seconds
        return time.monotonic() >= last + period - lead

    def _build_ahead(self) -> None:
        """Build and render the view on this thread at the last fold before
        the next expected scrape: the scrape finds it ready, at most one
        interval old, and only sends it."""
        with self._lock:
            scrapes = self._scrapes
        view = self.functions()
        with self._render_lock:
            self._render(view)
        with self._lock:
            # A scrape that came meanwhile took it (it waited for the build):
            # the next one is a period away and gets a build of its own.
            if self._scrapes == scrapes:
                self._ahead, self._ahead_at = True, time.monotonic()

    def _probe_runs(self) -> dict[str, tuple[int, int]]:
        """Probe run statistics: they move only while sampled, so read them then
        (and once after), not on every fold (one fdinfo read per program)."""
        if self._stats_fresh or self._runs is None:
            self._runs = {name: (s.runs, s.run_ns) for name, s in self.probes.program_stats().items()} \
                if self.probes is not None else {}
            self._stats_fresh = self.probes is not None and self.probes.stats_on
        return self._runs

    def _stand_in_for_lost_forks(self, snapshot: KernelSnapshot) -> None:
        """Events were lost: decide for the processes the maps show and no event named.

        Each unknown process is decided as its fork event would have decided
        it: its own rule on its /proc facts, else its parent's function (the
        parent from /proc), else host when it is already gone. A process
        whose fork event did arrive is decided again the same way, which
        changes nothing unless /proc changed in between."""
        for sample in snapshot.processes:
            if self._aggregator.knows(sample.pid):
                continue
            stat = procfs.DEFAULT.stat(sample.pid)
            if stat is not None:
                self._aggregator.on_fork(sample.pid, stat.ppid, 0)

    def _reload_rules(self) -> None:
        try:
            rules = load_rules(self.settings.rules_path)
        except Exception as err:  # keep serving with the old rules
            self.say(f"rules not reloaded: {err}")
            return
        self._aggregator.rules = rules
        self.say("rules reloaded (they apply to processes that start from now on)")

    def _on_event(self, event: ProcessEvent) -> None:
        with self._state:
            self._decide(event)

    def _decide(self, event: ProcessEvent) -> None:
        if event.type is EventType.FORK:
            # A reused pid needs no early fold: the probes keep a new owner's
            # figures apart from its last owner's (probes/fntax.h, successor).
            self._aggregator.on_fork(event.pid, event.ppid, event.ts_ns)
        elif event.type is EventType.EXEC:
            name = self.rules.exec_env_name()
            env = event.env_value
            self._aggregator.on_exec(event.pid, {name: env} if name and env is not None else None, event.ts_ns)


@dataclass(frozen=True)
class _Body:
    """The per-function families rendered for one view and the series served before it."""

    view: list[TaxedFunction]
    shown_from: Shown
    text: bytes
    served: Shown  # what serving it shows (the next body's shown_from)
    fresh: bool  # it serves some series for the first time, at 0


def _tune_gc() -> None:
    """Fewer cyclic collections: a fold makes and drops a few objects per live
    process (samples, call tables) and keeps tens of thousands alive at host
    scale, which the default thresholds scan over and over (the fold's cost
    per function grew with the number of functions). The figures hold no
    cycles, so young collections are made rare and the full ones run on a
    schedule (every FULL_COLLECTION_EVERY folds: what little cyclic garbage
    the HTTP server makes is bounded); everything loaded so far stays out of
    collections for good."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 1_000_000)


def _running_processes() -> list[tuple[int, int | None]]:
    found = []
    for proc in psutil.process_iter(["pid", "ppid"]):
        found.append((int(proc.info["pid"]), proc.info.get("ppid")))
    return found

