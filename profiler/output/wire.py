"""The agent's capture socket: where it is, how a message is framed, how a snapshot travels.

`fntax profile` asks a running agent for a command's figures instead of
loading probes of its own (profiler.capture.via_agent, profiler.agent.desk).
Both ends are this package at the same version: a message is one JSON
object on one line; a snapshot goes as plain JSON of profiler.model's
dataclasses, counters by their figure's field name (never by position, so a
figure added on one side only is an error, not a shifted column).
"""

from __future__ import annotations

import json
import socket
from typing import Any, Mapping

from profiler.figures import FIGURES
from profiler.model import CallStats, Counters, KernelSnapshot, KvmCalls, ProcessSample, Timeline

DEFAULT_SOCKET = "/run/fntax/agent.sock"
PROTOCOL = 1
# One message is at most this long (a snapshot of a capture's processes).
MAX_MESSAGE = 64 << 20


class WireError(Exception):
    """The other end broke the protocol (or went away)."""


def send(sock: socket.socket, message: Mapping[str, Any]) -> None:
    sock.sendall(json.dumps(message, separators=(",", ":")).encode() + b"\n")


class Reader:
    """Messages from a stream socket, one line each."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._buffer = b""

    def next(self) -> dict[str, Any] | None:
        """The next message; None at a clean end of stream."""
        while b"\n" not in self._buffer:
            chunk = self._sock.recv(1 << 16)
            if not chunk:
                if self._buffer:
                    raise WireError("connection closed inside a message")
                return None
            self._buffer += chunk
            if len(self._buffer) > MAX_MESSAGE:
                raise WireError("message too long")
        line, self._buffer = self._buffer.split(b"\n", 1)
        try:
            message = json.loads(line)
        except ValueError as err:
            raise WireError(f"not a message: {err}") from err
        if not isinstance(message, dict):
            raise WireError("not a message: expected a JSON object")
        return message


def _calls(table: Mapping[str, CallStats]) -> dict[str, list[int]]:
    return {name: [s.count, s.ns, s.cpu_ns] for name, s in table.items()}


def _calls_of(raw: Mapping[str, list[int]]) -> dict[str, CallStats]:
    return {str(name): CallStats(int(c), int(ns), int(cpu)) for name, (c, ns, cpu) in raw.items()}


def snapshot_to_wire(snapshot: KernelSnapshot) -> dict[str, Any]:
    return {
        "processes": [{
            "pid": p.pid, "comm": p.comm, "workload": p.workload, "exited": p.exited,
            "counters": {figure.field: value for figure, value in p.counters.items()},
            "syscalls": _calls(p.syscalls_by_name), "decompression": _calls(p.decompression_by_library),
            "kvm": [_calls(table) for table in p.kvm.tables()],
        } for p in snapshot.processes],
        "map_update_failures": dict(snapshot.map_update_failures),
        "taken_at_ns": snapshot.taken_at_ns,
        "probe_mean_ns": dict(snapshot.probe_mean_ns),
        "timelines": {str(w): [t.start_ns, t.end_ns, t.busy_ns, t.waiting_ns, t.blocked_ns, t.lock_misses]
                      for w, t in snapshot.timelines.items()},
        "probe_misses": dict(snapshot.probe_misses),
    }


def snapshot_from_wire(raw: Mapping[str, Any]) -> KernelSnapshot:
    """The inverse of snapshot_to_wire; WireError on anything malformed."""
    try:
        processes = []
        for p in raw["processes"]:
            by_field = p["counters"]
            if set(by_field) != {figure.field for figure in FIGURES}:
                raise WireError("the agent's figures differ from this fntax's (another version?)")
            processes.append(ProcessSample(
                pid=int(p["pid"]), comm=str(p["comm"]), workload=int(p["workload"]), exited=bool(p["exited"]),
                counters=Counters(int(by_field[figure.field]) for figure in FIGURES),
                syscalls_by_name=_calls_of(p["syscalls"]), decompression_by_library=_calls_of(p["decompression"]),
                kvm=KvmCalls(*(_calls_of(table) for table in p["kvm"]))))
        return KernelSnapshot(
            processes=tuple(processes),
            map_update_failures={str(k): int(v) for k, v in raw["map_update_failures"].items()},
            taken_at_ns=int(raw["taken_at_ns"]),
            probe_mean_ns={str(k): float(v) for k, v in raw["probe_mean_ns"].items()},
            timelines={int(w): Timeline(*(int(x) for x in t)) for w, t in raw["timelines"].items()},
            probe_misses={str(k): int(v) for k, v in raw["probe_misses"].items()})
    except WireError:
        raise
    except (KeyError, TypeError, ValueError) as err:
        raise WireError(f"malformed snapshot: {err!r}") from err
