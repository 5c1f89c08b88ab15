"""Wall time of each phase of a run (`fntax profile --timings`).

Phases are named where they happen (the probes' compile, attach, probe-cost
measurement and detach; the capture's run and analysis) and recorded into
one Timings that the CLI prints at exit. A phase seen twice (several runs)
adds up.
"""

from __future__ import annotations

import contextlib
import time
from typing import Iterator


class Timings:
    def __init__(self) -> None:
        self.started = time.monotonic()
        self.phases: dict[str, float] = {}
        self.marks: dict[str, float] = {}

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        began = time.monotonic()
        try:
            yield
        finally:
            self.phases[name] = self.phases.get(name, 0.0) + time.monotonic() - began

    def mark(self, name: str) -> None:
        """A moment since the start (for example when the result was out)."""
        self.marks[name] = time.monotonic() - self.started

    def line(self) -> str:
        parts = [f"{name} {seconds:.3f} s" for name, seconds in self.phases.items()]
        parts += [f"{name} at {seconds:.3f} s" for name, seconds in self.marks.items()]
        parts.append(f"total {time.monotonic() - self.started:.3f} s")
        return "timings: " + ", ".join(parts)


NO_TIMINGS = Timings()  # a sink for callers that do not ask
