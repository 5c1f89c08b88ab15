"""Process-tree events (fork, exec, exit) from the probes' perf buffer."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any, Callable

from profiler.bpf.contracts import event_types, load_header

_TYPES = event_types(load_header())


class EventType(enum.IntEnum):
    """enum fntax_event_type of probes/fntax.h (read from there at import)."""

    FORK = _TYPES["fork"]
    EXEC = _TYPES["exec"]
    EXIT = _TYPES["exit"]


@dataclass(frozen=True)
class ProcessEvent:
    type: EventType
    pid: int  # fork: the child thread; exec/exit: the process
    ppid: int  # fork: the forking process
    ts_ns: int
    env_value: str | None  # exec: the value execve's envp gave the agent's env variable


class EventStream:
    """Delivers ProcessEvents to a callback while polled; counts lost events."""

    def __init__(self, bpf: Any, on_event: Callable[[ProcessEvent], None], page_count: int = 256) -> None:
        self.lost = 0
        self._table = bpf["events"]

        def handle(_cpu: int, data: Any, _size: int) -> None:
            ev = self._table.event(data)
            env = bytes(ev.env_value).split(b"\0", 1)[0].decode(errors="replace") if ev.has_env else None
            on_event(ProcessEvent(EventType(int(ev.type)), int(ev.pid), int(ev.ppid), int(ev.ts_ns), env))

        self._table.open_perf_buffer(handle, page_cnt=page_count, lost_cb=self._on_lost)
        self._bpf = bpf

    def _on_lost(self, count: int) -> None:
        self.lost += count

    def poll(self, timeout_ms: int) -> None:
        self._bpf.perf_buffer_poll(timeout=timeout_ms)

    def close(self) -> None:
        """Close the perf buffers while the map still exists (bcc's own finaliser
        would try after cleanup() and print a traceback)."""
        for key in list(self._table._open_key_fds):
            del self._table[key]
