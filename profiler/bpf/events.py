"""Process-tree events from the probes' perf buffer: fork (a new process, never a thread) and exec."""

from __future__ import annotations

import enum
import os
from dataclasses import dataclass
from typing import Any, Callable

from profiler.bpf.contracts import event_types, load_header
from profiler.errors import InputError

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


# Per-CPU perf buffer size in pages. FNTAX_EVENT_PAGES (or `fntax agent
# --event-pages`) overrides it: tests make it tiny to force losses.
DEFAULT_PAGE_COUNT = 256
PAGE_COUNT_ENV = "FNTAX_EVENT_PAGES"


def check_page_count(pages: int) -> int:
    """bcc's perf buffers take a power of two pages per CPU."""
    if pages < 1 or pages & (pages - 1) or pages > 65536:
        raise InputError(f"event buffer pages {pages}: must be a power of two from 1 to 65536")
    return pages


def configured_page_count() -> int:
    raw = os.environ.get(PAGE_COUNT_ENV)
    if raw is None or raw == "":
        return DEFAULT_PAGE_COUNT
    try:
        return check_page_count(int(raw))
    except ValueError as err:
        raise InputError(f"{PAGE_COUNT_ENV}={raw!r}: not a whole number of pages") from err


class EventStream:
    """Delivers ProcessEvents to a callback while polled; counts lost events.

    A lost event is counted (`lost`, exported as fntax_events_lost_total);
    the process it described is attributed when it first shows up in the
    maps (the agent's fallback: its parent's function, else host)."""

    def __init__(self, bpf: Any, on_event: Callable[[ProcessEvent], None], page_count: int | None = None) -> None:
        page_count = configured_page_count() if page_count is None else check_page_count(page_count)
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
