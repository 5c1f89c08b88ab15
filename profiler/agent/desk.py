"""The agent's capture desk: `fntax profile` runs through the agent's probes.

The agent already has every probe loaded and every process tracked from
fork, so a capture needs no compile, attach or detach of its own: `fntax
profile` connects to a root-only Unix socket (profiler.output.wire) and asks
the desk to

- arm its start gate's child (or a running pid tree) under a workload id of
  its own (2 and up; every other task of the host is workload 1). The probes
  then do what they do for a cold capture: the gate child counts nothing
  until its exec, and its children take the id at fork, so the workload's
  timeline and processes are the same as a cold capture's;
- hand back the figures of that workload's processes: those already
  running when armed count from then (their figures at arming are taken
  off), and those that exit are kept from the fold that drops them from the
  maps until the capture ends.

The agent's own figures are unaffected: its ledger is kept per process and
never reads the workload id. A watch ends when its connection closes.
"""

from __future__ import annotations

import contextlib
import os
import socket
import socketserver
import stat
import struct
import threading
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Mapping

import psutil

from profiler.bpf.probes import KernelProbes
from profiler.model import KernelSnapshot, ProcessSample, calls_growth
from profiler.output.wire import PROTOCOL, Reader, WireError, send, snapshot_to_wire

__all__ = ["CaptureDesk", "DeskServer", "open_socket"]

FIRST_WORKLOAD = 2
LAST_WORKLOAD = 0xFFFE  # 0xFFFF measures probe costs (profiler.bpf.probes)
_PEERCRED = struct.Struct("3i")  # struct ucred: pid, uid, gid


def _since(sample: ProcessSample, before: ProcessSample | None) -> ProcessSample:
    """What a process did after `before` was read (all of it without one)."""
    if before is None:
        return sample
    return ProcessSample(
        pid=sample.pid, comm=sample.comm, workload=sample.workload, exited=sample.exited,
        counters=sample.counters.growth_since(before.counters),
        syscalls_by_name={k: v for k, v in calls_growth(sample.syscalls_by_name,
                                                         before.syscalls_by_name).items() if v.count or v.ns},
        decompression_by_library={k: v for k, v in calls_growth(sample.decompression_by_library,
                                                                before.decompression_by_library).items()
                                  if v.count or v.ns},
        kvm=sample.kvm.growth_since(before.kvm))


@dataclass
class _Watch:
    """One capture run through the desk."""

    workload: int
    # Processes armed while already running: their figures when armed.
    armed: dict[int, ProcessSample | None]
    failures_at_arm: Mapping[str, int]
    misses_at_arm: Mapping[str, int]
    seen: dict[int, ProcessSample] = field(default_factory=dict)  # latest sample by tgid

    def observe(self, snapshot: KernelSnapshot) -> None:
        for sample in snapshot.processes:
            if sample.workload != self.workload and (sample.pid not in self.armed or sample.superseded):
                continue  # not this capture's (a superseded one is a reused pid's last owner)
            old = self.seen.get(sample.pid)
            # An exited process's last sample is final: a later entry under
            # its pid is another process (pid reuse).
            if old is None or not old.exited:
                self.seen[sample.pid] = sample

    def processes(self) -> tuple[ProcessSample, ...]:
        return tuple(replace(_since(sample, self.armed.get(sample.pid)), workload=self.workload)
                     for _pid, sample in sorted(self.seen.items()))


class CaptureDesk:
    """The watches of captures run through the agent; every call is thread-safe.

    `maps` is the agent's lock around reading and pruning the probes' maps:
    the desk reads them from its connections' threads."""

    def __init__(self, probes: KernelProbes, maps: threading.RLock,
                 families: tuple[str, ...], decompressors: tuple[str, ...],
                 fold: Callable[[], None] = lambda: None) -> None:
        self._probes = probes
        self._maps = maps
        # The agent's fold: its ledger takes what exited processes left in
        # the maps, and their entries go.
        self._fold = fold
        self._watches: dict[int, _Watch] = {}
        self._next = FIRST_WORKLOAD
        self.families = families
        self.decompressors = decompressors

    def hello(self) -> dict[str, Any]:
        return {"ok": True, "agent": "fntax", "protocol": PROTOCOL, "pid": os.getpid(),
                "families": list(self.families), "decompressors": list(self.decompressors)}

    def _new_id(self) -> int:
        for _ in range(LAST_WORKLOAD):
            workload = self._next
            self._next = FIRST_WORKLOAD if workload >= LAST_WORKLOAD else workload + 1
            if workload not in self._watches:
                return workload
        raise WireError("every capture id is in use")

    def arm(self, pid: int, tree: bool, at_exec: bool) -> int:
        """Track pid (and with tree, its descendants) as a new workload; returns its id."""
        tgids = {pid}
        if tree:
            with contextlib.suppress(psutil.Error):
                tgids |= {child.pid for child in psutil.Process(pid).children(recursive=True)}
        with self._maps:
            workload = self._new_id()
            before = self._probes.snapshot()
            if any(sample.exited for sample in before.processes if sample.pid in tgids):
                # A pid to arm is alive, so an entry marked exited under it is
                # a dead process's that the agent has not folded yet (the pid
                # was reused at once). Taken as the armed process's, it was
                # its "last sample": the capture came back empty. Fold first.
                self._fold()
                before = self._probes.snapshot()
            known = {sample.pid: sample for sample in before.processes if not sample.exited}
            # Gate child (at_exec): asleep on the gate, so its figures are
            # settled; what it did since fork is not the function's.
            self._watches[workload] = _Watch(workload, {tgid: known.get(tgid) for tgid in tgids},
                                             dict(before.map_update_failures), dict(before.probe_misses))
            self._probes.track(pid, workload, tree=tree, at_exec=at_exec)
        return workload

    def observe(self, snapshot: KernelSnapshot) -> None:
        """A fold's snapshot (before exited processes leave the maps)."""
        for watch in list(self._watches.values()):
            watch.observe(snapshot)

    def snapshot(self, workloads: list[int]) -> KernelSnapshot:
        """The processes, timelines and map failures of these workloads, read now."""
        with self._maps:
            now = self._probes.snapshot()
            self.observe(now)
            watches = [self._watches[w] for w in workloads]
        processes = tuple(p for watch in watches for p in watch.processes())
        failures = {name: count - min(w.failures_at_arm.get(name, 0) for w in watches)
                    for name, count in now.map_update_failures.items()} if watches else {}
        misses = {probe: count - min(w.misses_at_arm.get(probe, 0) for w in watches)
                  for probe, count in now.probe_misses.items()} if watches else {}
        return KernelSnapshot(processes=processes, map_update_failures=failures, taken_at_ns=now.taken_at_ns,
                              probe_mean_ns=now.probe_mean_ns,
                              timelines={w: now.timelines[w] for w in workloads if w in now.timelines},
                              probe_misses=misses)

    def tids(self, workload: int) -> set[int]:
        with self._maps:
            return self._probes.workload_tids(workload)

    def release(self, workloads: list[int]) -> None:
        with self._maps:
            for workload in workloads:
                if self._watches.pop(workload, None) is not None:
                    self._probes.reader.drop_timeline(workload)

    def answer(self, message: Mapping[str, Any], mine: list[int]) -> dict[str, Any]:
        """One request of a connection whose workloads are `mine`."""
        op = message.get("op")
        if op == "hello":
            return self.hello()
        if op == "arm":
            pid = message.get("pid")
            if not isinstance(pid, int) or pid <= 0:
                raise WireError("arm: pid must be a positive integer")
            workload = self.arm(pid, bool(message.get("tree")), bool(message.get("at_exec")))
            mine.append(workload)
            return {"ok": True, "workload": workload}
        if op == "snapshot":
            wanted = message.get("workloads")
            if not isinstance(wanted, list) or not set(wanted) <= set(mine):
                raise WireError("snapshot: workloads must be this connection's")
            return {"ok": True, "snapshot": snapshot_to_wire(self.snapshot(wanted))}
        if op == "tids":
            asked = message.get("workload")
            if not isinstance(asked, int) or asked not in mine:
                raise WireError("tids: workload must be this connection's")
            return {"ok": True, "tids": sorted(self.tids(asked))}
        raise WireError(f"unknown request {op!r}")


class DeskServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    """The capture socket: one thread per connection; root only.

    Bound as the agent starts (with its port), served once the probes are
    loaded: a client that connects before waits in the listen queue."""

    daemon_threads = True
    desk: CaptureDesk | None = None

    def __init__(self, path: str) -> None:
        self.path = path
        self.inode = 0  # of the socket file, once bound
        super().__init__(path, _Connection, bind_and_activate=False)

    def serve_in_background(self) -> None:
        self._serving = True
        threading.Thread(target=self.serve_forever, name="fntax-desk", daemon=True).start()

    def close(self) -> None:
        """Stop serving, remove the socket file (if still this one) and close it."""
        if getattr(self, "_serving", False):
            self.shutdown()  # waits for serve_forever: only once it runs
        with contextlib.suppress(OSError):
            # Another agent may have taken the path since (it found this one stale).
            if os.stat(self.path).st_ino == self.inode:
                os.unlink(self.path)
        self.server_close()


class _Connection(socketserver.BaseRequestHandler):
    server: DeskServer

    def handle(self) -> None:
        sock: socket.socket = self.request
        _pid, uid, _gid = _PEERCRED.unpack(sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _PEERCRED.size))
        if uid != 0:
            send(sock, {"ok": False, "error": "captures through the agent are for root only"})
            return
        reader = Reader(sock)
        mine: list[int] = []
        desk = None
        try:
            while (message := reader.next()) is not None:
                desk = self.server.desk
                if desk is None:
                    send(sock, {"ok": False, "error": "the agent is starting (loading its probes)"})
                    continue
                try:
                    reply = desk.answer(message, mine)
                except WireError as err:
                    reply = {"ok": False, "error": str(err)}
                send(sock, reply)
        except (WireError, OSError):
            pass  # the client went away or broke the protocol: its watches end below
        finally:
            if desk is not None and mine:
                desk.release(mine)


def open_socket(path: str, say: Callable[[str], None]) -> DeskServer | None:
    """Bind the capture socket (root-only); None, with one line, when it cannot be had.

    A socket file nobody answers on is a stale one (an agent killed before
    it could remove it) and is replaced; one that answers belongs to another
    running agent, which keeps it."""
    directory = os.path.dirname(path) or "."
    try:
        os.makedirs(directory, mode=0o700, exist_ok=True)
        if os.path.lexists(path):
            if not stat.S_ISSOCK(os.lstat(path).st_mode):
                say(f"warning: {path} exists and is not a socket: captures through the agent are off")
                return None
            probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                probe.connect(path)
                say(f"warning: another agent answers on {path}: captures through this agent are off")
                return None
            except OSError:
                os.unlink(path)  # stale
            finally:
                probe.close()
        server = DeskServer(path)
        old = os.umask(0o177)  # the socket is created 0600
        try:
            server.server_bind()
        finally:
            os.umask(old)
        server.inode = os.stat(path).st_ino
        server.server_activate()
        return server
    except OSError as err:
        say(f"warning: cannot serve captures on {path}: {err.strerror or err}")
        return None

