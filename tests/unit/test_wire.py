"""The agent socket's wire format: a snapshot goes and comes back unchanged; anything else is a WireError."""

from __future__ import annotations

import socket

import pytest

from profiler.figures import FIGURES
from profiler.model import CallStats, Counters, KernelSnapshot, KvmCalls, ProcessSample, Timeline
from profiler.output.wire import Reader, WireError, send, snapshot_from_wire, snapshot_to_wire


def _snapshot() -> KernelSnapshot:
    counters = Counters(range(1, len(FIGURES) + 1))
    proc = ProcessSample(pid=42, comm="handler", workload=3, exited=True, counters=counters,
                         syscalls_by_name={"getppid": CallStats(7, 700), "read": CallStats(1, 10)},
                         decompression_by_library={"libz": CallStats(2, 20, 15)},
                         kvm=KvmCalls(pio_by_port={"0x3f8": CallStats(3, 30)}))
    return KernelSnapshot(processes=(proc,), map_update_failures={"procs": 2}, taken_at_ns=123,
                          probe_mean_ns={"sys_enter": 41.5}, timelines={3: Timeline(1, 9, 5, 2, 1, 0)})


def test_a_snapshot_travels_unchanged() -> None:
    snapshot = _snapshot()
    assert snapshot_from_wire(snapshot_to_wire(snapshot)) == snapshot


@pytest.mark.parametrize("damage", [
    lambda raw: raw.pop("processes"),
    lambda raw: raw["processes"][0]["counters"].pop(FIGURES[0].field),
    lambda raw: raw["processes"][0]["counters"].update(not_a_figure=1),
    lambda raw: raw["timelines"].update({"3": [1, 2]}),
    lambda raw: raw["processes"][0].update(pid="many"),
])
def test_a_damaged_snapshot_is_a_wire_error(damage: object) -> None:
    raw = snapshot_to_wire(_snapshot())
    damage(raw)  # type: ignore[operator]
    with pytest.raises(WireError):
        snapshot_from_wire(raw)


def test_messages_are_framed_by_lines() -> None:
    a, b = socket.socketpair()
    with a, b:
        send(a, {"op": "hello"})
        send(a, {"op": "arm", "pid": 7})
        a.sendall(b"[1, 2]\n{not json\n")
        a.shutdown(socket.SHUT_WR)
        reader = Reader(b)
        assert reader.next() == {"op": "hello"}
        assert reader.next() == {"op": "arm", "pid": 7}
        with pytest.raises(WireError):
            reader.next()  # a JSON array is not a message
        with pytest.raises(WireError):
            reader.next()
        assert reader.next() is None
