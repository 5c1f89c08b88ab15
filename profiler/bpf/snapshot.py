"""Read the probes' maps into plain, frozen dataclasses (profiler.model).

Counters are read member by member in the order of the figure table, which
the loader has checked against the compiled struct; nothing here names a
counter.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Iterable

from profiler.bpf.contracts import load_header, map_error_names
from profiler.bpf.kvm_names import split_slot
from profiler.figures import FIGURES
from profiler.model import CallStats, Counters, KernelSnapshot, KvmCalls, ProcessSample, Timeline

# The bounded per-process maps whose fill is published.
FILL_MAPS: tuple[str, ...] = ("tasks", "procs", "proc_syscalls", "proc_kvm")


def counters_of(raw: Any) -> Counters:
    """A struct fntax_counters (bcc's ctypes view) as Counters."""
    return Counters(int(getattr(raw, figure.field)) for figure in FIGURES)


def _comm(raw: Any) -> str:
    return bytes(raw).split(b"\0", 1)[0].decode(errors="replace")


class MapReader:
    """Reads one loaded module's maps; `tgid_of` maps a thread id to its process."""

    def __init__(self, bpf: Any, decompress: bool, syscall_name: Callable[[int], str],
                 library_name: Callable[[int], str], tgid_of: Callable[[int], int | None]) -> None:
        self._bpf = bpf
        self._decompress = decompress
        self._syscall_name = syscall_name
        self._library_name = library_name
        self._tgid_of = tgid_of
        self._error_names = map_error_names(load_header())
        # Batch reads (one bpf(2) call per map instead of two per entry),
        # where the kernel supports them for a map.
        self._batch: dict[str, bool] = {}
        # Per-process tables' keys by tgid as last read: forgetting an exited
        # process deletes its keys without walking the whole map again.
        self._keys: dict[str, dict[int, list[tuple[int, ...]]]] = {}
        # Entries each map held at the last read (the fill gauges).
        self._entries: dict[str, int] = {}

    def _items(self, name: str) -> list[tuple[Any, Any]]:
        table = self._bpf[name]
        if self._batch.get(name, True):
            try:
                items = list(table.items_lookup_batch())
                self._batch[name] = True
            except Exception:  # bcc raises bare Exception when the kernel refuses
                self._batch[name] = False
                items = list(table.items())
        else:
            items = list(table.items())
        self._entries[name] = len(items)
        return items

    def _by_tgid(self, name: str) -> list[tuple[Any, Any]]:
        """A per-process table's entries, remembering each tgid's keys for forget()."""
        items = self._items(name)
        keys: dict[int, list[tuple[int, ...]]] = {}
        for key, _val in items:
            # Plain ints: a key read in a batch is a view into the batch's buffer.
            keys.setdefault(int(key.tgid), []).append(tuple(int(getattr(key, f[0])) for f in key._fields_))
        self._keys[name] = keys
        return items

    def snapshot(self, probe_mean_ns: dict[str, float]) -> KernelSnapshot:
        """Every map at one moment (unfolded per-CPU deltas included)."""
        bpf = self._bpf
        found: dict[int, tuple[str, int, bool, Counters]] = {}
        for key, proc in self._items("procs"):
            # A scalar key read in a batch is a plain int; one read singly, a c_uint.
            found[int(getattr(key, "value", key))] = (_comm(proc.comm), int(proc.workload), bool(proc.exited), counters_of(proc.c))
        for tgid, delta in self._unfolded(found):
            comm, workload, exited, counters = found[tgid]
            found[tgid] = (comm, workload, exited, counters + delta)
        syscalls: dict[int, dict[str, CallStats]] = {pid: {} for pid in found}
        for key, val in self._by_tgid("proc_syscalls"):
            table = syscalls.get(int(key.tgid))
            if table is not None:
                name = self._syscall_name(int(key.nr))
                table[name] = table.get(name, CallStats()) + CallStats(int(val.count), int(val.ns))
        decomp: dict[int, dict[str, CallStats]] = {pid: {} for pid in found}
        if self._decompress:
            for key, val in self._by_tgid("decomp"):
                table = decomp.get(int(key.tgid))
                if table is not None:
                    lib = self._library_name(int(key.lib))
                    table[lib] = table.get(lib, CallStats()) + CallStats(int(val.count), int(val.ns),
                                                                         int(val.cpu_ns))
        kvm = self._kvm_tables(found)
        processes = tuple(
            ProcessSample(pid=pid, comm=comm, workload=workload, exited=exited, counters=counters,
                          syscalls_by_name=syscalls[pid], decompression_by_library=decomp[pid],
                          kvm=kvm.get(pid, KvmCalls()))
            for pid, (comm, workload, exited, counters) in sorted(found.items()))
        return KernelSnapshot(processes=processes, map_update_failures=self.map_update_failures(),
                              taken_at_ns=time.monotonic_ns(), probe_mean_ns=dict(probe_mean_ns),
                              timelines=self.timelines())

    def _kvm_tables(self, known: dict[int, Any]) -> dict[int, KvmCalls]:
        """proc_kvm: each VM monitor's reasons and port buckets (slots split by probes/fntax.h)."""
        header = load_header()
        tables: dict[int, tuple[dict[str, CallStats], ...]] = {}
        for key, val in self._by_tgid("proc_kvm"):
            tgid = int(key.tgid)
            if tgid not in known:
                continue
            index, name = split_slot(int(key.slot), header)
            table = tables.setdefault(tgid, ({}, {}, {}))[index]
            table[name] = table.get(name, CallStats()) + CallStats(int(val.count), int(val.ns))
        return {tgid: KvmCalls(*parts) for tgid, parts in tables.items()}

    def timelines(self) -> dict[int, Timeline]:
        """Each workload's timeline (profile only; empty when compiled without)."""
        try:
            table = self._bpf["timelines"]
        except KeyError:
            return {}
        return {int(key.value): Timeline(int(tl.start_ns), int(tl.end_ns), int(tl.busy_ns), int(tl.waiting_ns),
                                         int(tl.blocked_ns), int(tl.lock_misses))
                for key, tl in table.items()}

    def start_timeline(self, workload: int) -> None:
        """An empty timeline for a workload: it starts at the workload's exec."""
        table = self._bpf["timelines"]
        table[table.Key(workload)] = table.Leaf()

    def _unfolded(self, known: dict[int, Any]) -> list[tuple[int, Counters]]:
        """What tasks still on a CPU have not folded yet (a live --pid capture)."""
        out = []
        for slot in self._bpf["cpu_state"][0]:
            if not slot.workload:
                continue
            delta = counters_of(slot.delta)
            if delta == Counters():
                continue
            tgid = self._tgid_of(int(slot.tid))
            if tgid is not None and tgid in known:
                out.append((tgid, delta))
        return out

    def forget(self, pids: Iterable[int]) -> None:
        """Drop the map entries of exited processes (their figures were read)."""
        doomed = set(pids)
        if not doomed:
            return
        procs = self._bpf["procs"]
        for pid in doomed:
            try:
                del procs[procs.Key(pid)]
            except KeyError:
                pass
        for name, by_tgid in self._keys.items():
            table = self._bpf[name]
            for pid in doomed:
                for key in by_tgid.pop(pid, ()):
                    try:
                        del table[table.Key(*key)]
                    except KeyError:
                        pass

    def map_fill(self) -> tuple[dict[str, int], dict[str, int]]:
        """(entries, capacity) of the bounded per-process maps."""
        entries: dict[str, int] = {}
        capacity: dict[str, int] = {}
        for name in FILL_MAPS:
            table = self._bpf[name]
            if name not in self._entries:
                self._items(name)
            entries[name] = self._entries[name]
            capacity[name] = int(table.max_entries)
        return entries, capacity

    def count_entries(self, name: str) -> int:
        """Read a map's entries now (for a map the snapshot does not read, such as tasks)."""
        self._items(name)
        return self._entries[name]

    def map_update_failures(self) -> dict[str, int]:
        errors = self._bpf["errors"]
        return {name: int(errors[errors.Key(i)].value) for i, name in self._error_names.items()}
