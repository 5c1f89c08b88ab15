"""`fntax profile` through a running agent: the same capture, no probes of its own.

The agent has every probe loaded and every process tracked from fork; its
capture desk (profiler.agent.desk) arms this capture's start gate under a
workload id of its own and hands back that workload's processes and
timeline, so nothing is compiled, attached or detached here. What the
capture driver (profiler.capture.run) asks of probes -- track, snapshot,
workload_tids -- is asked of the agent instead, and the result is the same
capture as a cold one.

Whatever keeps the agent from serving (no socket: silently; a stale socket,
one that is not the agent's, an agent busy, starting or lacking a probe
family the capture needs: with one line saying why) leaves the cold path.
"""

from __future__ import annotations

import os
import socket
import stat
import struct
import time
from dataclasses import dataclass, replace
from typing import Any, Mapping

from profiler.bpf.loader import ProbeOptions, effective_families
from profiler.errors import AgentLost
from profiler.model import KernelSnapshot
from profiler.output.wire import PROTOCOL, Reader, WireError, send, snapshot_from_wire
from profiler.system import procfs

HELLO_TIMEOUT_S = 1.0  # an agent that has not said hello by then is busy: go cold
REQUEST_TIMEOUT_S = 30.0
GATE_PATIENCE_S = 2.0
_PEERCRED = struct.Struct("3i")


@dataclass(frozen=True)
class Unavailable:
    """Why this capture does not go through the agent (one line)."""

    reason: str


class AgentProbes:
    """The probes of a running agent, as profiler.capture.run uses probes."""

    def __init__(self, sock: socket.socket, path: str, hello: Mapping[str, Any]) -> None:
        self._sock = sock
        self._reader = Reader(sock)
        self.path = path
        self.agent_pid = int(hello.get("pid", 0))
        self._ids: dict[int, int] = {}  # this capture's workload id -> the agent's

    def __enter__(self) -> AgentProbes:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """The agent ends this capture's watches when the connection closes."""
        self._sock.close()

    def _ask(self, request: Mapping[str, Any]) -> dict[str, Any]:
        try:
            send(self._sock, request)
            reply = self._reader.next()
        except (OSError, WireError) as err:
            raise AgentLost(f"the agent at {self.path} stopped answering during the capture: {err}") from err
        if reply is None:
            raise AgentLost(f"the agent at {self.path} went away during the capture")
        if not reply.get("ok"):
            raise AgentLost(f"the agent at {self.path} refused: {reply.get('error', 'no reason given')}")
        return reply

    def track(self, pid: int, workload: int = 1, tree: bool = False, at_exec: bool = False) -> None:
        if at_exec:
            _wait_asleep(pid)
        reply = self._ask({"op": "arm", "pid": pid, "tree": tree, "at_exec": at_exec})
        self._ids[workload] = int(reply["workload"])

    def workload_tids(self, workload: int) -> set[int]:
        if workload not in self._ids:
            return set()
        return {int(t) for t in self._ask({"op": "tids", "workload": self._ids[workload]})["tids"]}

    def snapshot(self) -> KernelSnapshot:
        if not self._ids:
            return KernelSnapshot(processes=(), map_update_failures={}, taken_at_ns=time.monotonic_ns())
        reply = self._ask({"op": "snapshot", "workloads": list(self._ids.values())})
        try:
            theirs = snapshot_from_wire(reply["snapshot"])
        except (KeyError, WireError) as err:
            raise AgentLost(f"the agent at {self.path} sent a bad snapshot: {err}") from err
        ours = {agent: mine for mine, agent in self._ids.items()}
        return replace(theirs,
                       processes=tuple(replace(p, workload=ours.get(p.workload, 0)) for p in theirs.processes),
                       timelines={ours[w]: t for w, t in theirs.timelines.items() if w in ours})


def _wait_asleep(pid: int) -> None:
    """Until the gate child sleeps on its gate: its figures up to then are
    settled in the maps (folded at its switch-out) when the agent reads them."""
    deadline = time.monotonic() + GATE_PATIENCE_S
    while time.monotonic() < deadline:
        proc = procfs.DEFAULT.stat(pid)
        if proc is None or proc.state in ("S", "D"):
            return
        time.sleep(0.0005)


def connect(path: str, options: ProbeOptions) -> AgentProbes | Unavailable | None:
    """The agent at path, ready for this capture; None when no socket is there."""
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return None
    except OSError as err:
        return Unavailable(f"cannot read {path}: {err.strerror}")
    if not stat.S_ISSOCK(info.st_mode):
        return Unavailable(f"{path} is not a socket")
    if info.st_uid != 0 or info.st_mode & 0o077:
        return Unavailable(f"{path} is not the agent's (owner uid {info.st_uid}, mode {info.st_mode & 0o777:o}; "
                           "the agent's is root's, 0600)")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(HELLO_TIMEOUT_S)
        try:
            sock.connect(path)
        except ConnectionRefusedError:
            return Unavailable(f"{path} is stale (no agent answers on it)")
        except socket.timeout:
            return Unavailable(f"the agent at {path} is busy (no connection in {HELLO_TIMEOUT_S:g} s)")
        except OSError as err:
            return Unavailable(f"cannot connect to {path}: {err.strerror or err}")
        _pid, uid, _gid = _PEERCRED.unpack(sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _PEERCRED.size))
        if uid != 0:
            return Unavailable(f"{path} is not the agent's (served by uid {uid})")
        try:
            send(sock, {"op": "hello", "protocol": PROTOCOL})
            hello = Reader(sock).next()
        except socket.timeout:
            return Unavailable(f"the agent at {path} is busy or still starting (no answer in "
                               f"{HELLO_TIMEOUT_S:g} s)")
        except (OSError, WireError):
            hello = None
        if hello is None or (hello.get("ok") and (hello.get("agent") != "fntax"
                                                  or hello.get("protocol") != PROTOCOL)):
            return Unavailable(f"{path} did not answer as an fntax agent of this version")
        if not hello.get("ok"):
            return Unavailable(f"the agent at {path} cannot serve: {hello.get('error', 'no reason given')}")
        missing = [f for f in effective_families(options) if f not in hello.get("families", ())]
        missing += [f"--decompressor {spec}" for spec in options.extra_decompressors
                    if spec not in hello.get("decompressors", ())]
        if missing:
            return Unavailable(f"the agent at {path} does not probe {', '.join(missing)}")
        sock.settimeout(REQUEST_TIMEOUT_S)
        probes = AgentProbes(sock, path, hello)
        sock = None  # type: ignore[assignment]  # the probes own it now
        return probes
    finally:
        if sock is not None:
            sock.close()
