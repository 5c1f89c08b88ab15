"""Read the probes' maps into plain, frozen dataclasses (profiler.model).

Counters are read member by member in the order of the figure table, which
the loader has checked against the compiled struct; nothing here names a
counter.
"""

from __future__ import annotations

import contextlib
import functools
import os
import time
from operator import itemgetter
from typing import Any, Callable, Iterable

from profiler.bpf.batch import BatchTable
from profiler.bpf.contracts import load_header, map_error_names
from profiler.bpf.kvm_names import split_slot
from profiler.figures import FIGURES
from profiler.model import CallStats, Counters, KernelSnapshot, KvmCalls, ProcessSample, Timeline, merge_calls

# The bounded per-process maps whose fill is published.
FILL_MAPS: tuple[str, ...] = ("tasks", "procs", "proc_syscalls", "proc_kvm")


def counters_of(raw: Any) -> Counters:
    """A struct fntax_counters (bcc's ctypes view) as Counters."""
    return Counters(int(getattr(raw, figure.field)) for figure in FIGURES)


@functools.lru_cache(maxsize=4096)
def _comm(raw: bytes) -> str:
    """A task's comm (16 bytes, NUL-padded) as text; a host has few distinct ones."""
    return raw.split(b"\0", 1)[0].decode(errors="replace")


class MapReader:
    """Reads one loaded module's maps; `tgid_of` maps a thread id to its process."""

    def __init__(self, bpf: Any, decompress: bool, syscall_name: Callable[[int], str],
                 library_name: Callable[[int], str], tgid_of: Callable[[int], int | None]) -> None:
        self._bpf = bpf
        self._decompress = decompress
        self._syscall_name = syscall_name
        self._library_name = library_name
        self._tgid_of = tgid_of
        header = load_header()
        self._error_names = map_error_names(header)
        # A reused pid's new owner counts under pid | successor while its
        # last owner's entry is still here, marked superseded (probes/fntax.h).
        self._successor = header.define("FNTAX_SUCCESSOR")
        self._superseded = header.define("FNTAX_SUPERSEDED")
        # The keys each exited pid's last sample was read from: forget()
        # deletes those, never a successor's.
        self._keys_of: dict[int, set[int]] = {}
        self._tables: dict[str, BatchTable] = {}
        # Per-process tables' entries as last read: forgetting an exited
        # process deletes its keys without reading the whole map again.
        self._last: dict[str, list[tuple[tuple[Any, ...], tuple[Any, ...]]]] = {}
        # Entries each map held at the last read (the fill gauges).
        self._entries: dict[str, int] = {}

    def _table(self, name: str) -> BatchTable:
        table = self._tables.get(name)
        if table is None:
            table = self._tables[name] = BatchTable(self._bpf[name])
        return table

    def _items(self, name: str) -> list[tuple[tuple[Any, ...], tuple[Any, ...]]]:
        items = self._table(name).read()
        self._entries[name] = len(items)
        return items

    def _by_tgid(self, name: str) -> list[tuple[tuple[Any, ...], tuple[Any, ...]]]:
        """A per-process table's entries, remembered for forget()."""
        items = self._last[name] = self._items(name)
        return items

    def _procs(self, exited_only: bool) -> dict[int, tuple[str, int, int, Counters]]:
        """Key (pid, or pid | successor) -> comm, workload, exited state, counters."""
        table = self._table("procs")
        counters = itemgetter(*(table.value_index("c", figure.field) for figure in FIGURES))
        workload, exited, comm = (table.value_index(name) for name in ("workload", "exited", "comm"))
        items = self._items("procs")
        if exited_only:
            # A process that exited, with the other part of its pid (its
            # successor's or its predecessor's key) if there is one.
            gone = {key[0] & ~self._successor for key, val in items if val[exited]}
            items = [(key, val) for key, val in items if key[0] & ~self._successor in gone]
        return {key[0]: (_comm(val[comm]), val[workload], val[exited], Counters.of_raw(counters(val)))
                for key, val in items}

    def _calls(self, name: str, slot: str, known: dict[int, Any], label: Callable[[int], str],
               cpu: bool = False) -> dict[int, dict[str, CallStats]]:
        """A per-process call table (syscalls by number, decoders by library) by tgid, then name."""
        table = self._table(name)
        tgid_at, slot_at = table.key_index("tgid"), table.key_index(slot)
        count_at, ns_at = table.value_index("count"), table.value_index("ns")
        cpu_at = table.value_index("cpu_ns") if cpu else None
        out: dict[int, dict[str, CallStats]] = {pid: {} for pid in known}
        names: dict[int, str] = {}
        for key, val in self._by_tgid(name):
            calls = out.get(key[tgid_at])
            if calls is None:
                continue
            nr = key[slot_at]
            called = names.get(nr)
            if called is None:
                called = names[nr] = label(nr)
            stats = CallStats(val[count_at], val[ns_at], val[cpu_at] if cpu_at is not None else 0)
            have = calls.get(called)
            calls[called] = stats if have is None else have + stats
        return out

    def snapshot(self, probe_mean_ns: dict[str, float], exited_only: bool = False) -> KernelSnapshot:
        """Every map at one moment (unfolded per-CPU deltas included).

        exited_only: only the processes that exited (a live one's figures
        are not decoded: at host scale, decoding every live process's
        entries was nearly all of a fold's cost)."""
        found = self._procs(exited_only)
        for key, delta in self._unfolded(found):
            comm, workload, exited, counters = found[key]
            found[key] = (comm, workload, exited, counters + delta)
        syscalls = self._calls("proc_syscalls", "nr", found, self._syscall_name)
        decomp = self._calls("decomp", "lib", found, self._library_name, cpu=True) if self._decompress \
            else {key: {} for key in found}
        kvm = self._kvm_tables(found)
        empty = KvmCalls()

        def sample(pid: int, keys: list[int], superseded: bool = False) -> ProcessSample:
            first = found[keys[0]]
            exited = superseded or any(found[key][2] for key in keys)
            if exited:
                self._keys_of.setdefault(pid, set()).update(keys)
            if len(keys) == 1:
                key = keys[0]
                return ProcessSample(pid=pid, comm=first[0], workload=first[1], exited=exited,
                                     counters=first[3], syscalls_by_name=syscalls[key],
                                     decompression_by_library=decomp[key], kvm=kvm.get(key, empty),
                                     superseded=superseded)
            # A new owner's early part (under the successor key) and the rest.
            return ProcessSample(
                pid=pid, comm=found[keys[-1]][0], workload=first[1], exited=exited,
                counters=sum((found[key][3] for key in keys[1:]), first[3]),
                syscalls_by_name=merge_calls(syscalls[keys[0]], syscalls[keys[1]]),
                decompression_by_library=merge_calls(decomp[keys[0]], decomp[keys[1]]),
                kvm=kvm.get(keys[0], empty) + kvm.get(keys[1], empty))

        self._keys_of.clear()
        processes = []
        successor = self._successor
        for key in sorted(found):
            if key & successor:
                if key & ~successor not in found:  # its predecessor's entry is gone: the early part alone
                    processes.append(sample(key & ~successor, [key]))
                continue
            later = key | successor
            if found[key][2] == self._superseded:
                # The last owner (superseded) first, then its successor, a
                # process of its own: the fold retires the one, then meets the other.
                processes.append(sample(key, [key], superseded=True))
                if later in found:
                    processes.append(sample(key, [later]))
            else:
                processes.append(sample(key, [later, key] if later in found else [key]))
        return KernelSnapshot(processes=tuple(processes), map_update_failures=self.map_update_failures(),
                              taken_at_ns=time.monotonic_ns(), probe_mean_ns=dict(probe_mean_ns),
                              timelines=self.timelines())

    def _kvm_tables(self, known: dict[int, Any]) -> dict[int, KvmCalls]:
        """proc_kvm: each VM monitor's reasons and port buckets (slots split by probes/fntax.h)."""
        header = load_header()
        tables: dict[int, tuple[dict[str, CallStats], ...]] = {}
        kvm = self._table("proc_kvm")
        tgid_at, slot_at = kvm.key_index("tgid"), kvm.key_index("slot")
        count_at, ns_at = kvm.value_index("count"), kvm.value_index("ns")
        for key, val in self._by_tgid("proc_kvm"):
            tgid = key[tgid_at]
            if tgid not in known:
                continue
            index, name = split_slot(key[slot_at], header)
            table = tables.setdefault(tgid, ({}, {}, {}))[index]
            table[name] = table.get(name, CallStats()) + CallStats(val[count_at], val[ns_at])
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

    def drop_timeline(self, workload: int) -> None:
        """A workload's timeline is no longer read (the agent's ended captures)."""
        table = self._bpf["timelines"]
        with contextlib.suppress(KeyError):
            del table[table.Key(workload)]

    def _unfolded(self, known: dict[int, Any]) -> list[tuple[int, Counters]]:
        """What tasks still on a CPU have not folded yet (a live --pid capture), by key."""
        out = []
        for slot in self._bpf["cpu_state"][0]:
            if not slot.workload:
                continue
            delta = counters_of(slot.delta)
            if delta == Counters():
                continue
            tgid = self._tgid_of(int(slot.tid))
            if tgid is not None and tgid | self._successor in known:
                out.append((tgid | self._successor, delta))
            elif tgid is not None and tgid in known:
                out.append((tgid, delta))
        return out

    def forget(self, pids: Iterable[int]) -> None:
        """Drop the map entries of exited processes (their figures were read)."""
        doomed: set[int] = set()
        for pid in pids:
            doomed.update(self._keys_of.pop(pid, (pid,)))
        if not doomed:
            return
        self._table("procs").delete([(key,) for key in doomed])
        for name, items in self._last.items():
            at = self._table(name).key_index("tgid")
            keys = [key for key, _val in items if key[at] in doomed]
            if keys:
                self._table(name).delete(keys)
                self._last[name] = [item for item in items if item[0][at] not in doomed]

    def map_fill(self) -> tuple[dict[str, int], dict[str, int]]:
        """(entries, capacity) of the bounded per-process maps."""
        entries: dict[str, int] = {}
        capacity: dict[str, int] = {}
        for name in FILL_MAPS:
            if name not in self._entries:
                self._items(name)
            entries[name] = self._entries[name]
            capacity[name] = self._table(name).capacity
        return entries, capacity

    def count_entries(self, name: str) -> int:
        """Read a map's entries now (for a map the snapshot does not read, such as tasks)."""
        self._items(name)
        return self._entries[name]

    def switches_unseen(self) -> int:
        """Switches of tracked tasks onto a CPU that sched_switch never showed (probes/fntax.h)."""
        per_cpu = self._bpf["cpu_idle"]
        return sum(int(per_cpu[per_cpu.Key(cpu)].switches_unseen) for cpu in range(os.cpu_count() or 1))

    def map_update_failures(self) -> dict[str, int]:
        errors = self._bpf["errors"]
        return {name: int(errors[errors.Key(i)].value) for i, name in self._error_names.items()}
