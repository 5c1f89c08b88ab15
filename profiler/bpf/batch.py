"""Whole-map reads and deletes in batches, decoded with `struct` rather than ctypes.

bcc's items_lookup_batch allocates key and value arrays of the map's whole
capacity on every call and hands back one ctypes object per entry: under
process churn that was most of the agent's CPU. Here one buffer per map is
kept, the kernel fills it in chunks (BPF_MAP_LOOKUP_BATCH), and each entry is
decoded in C by a precompiled `struct.Struct` into a flat tuple of plain
values, laid out from the map's ctypes key and value types (so from the
header the loader checked; nothing here names a field).
"""

from __future__ import annotations

import ctypes as ct
import errno
import os
import struct
from typing import Any, Sequence

# Entries fetched per bpf(2) call; the buffer grows to the map's capacity at most.
CHUNK = 4096
_SIZES = {1: "b", 2: "h", 4: "i", 8: "q"}


class BatchUnsupported(Exception):
    """The kernel refused a batch operation on this map: read it entry by entry."""


def layout(ctype: Any) -> tuple[str, list[tuple[str, ...]]]:
    """A little-endian struct format for a ctypes type, and each value's path
    in the decoded tuple (nested structures flattened, char arrays as bytes)."""
    fmt: list[str] = []
    paths: list[tuple[str, ...]] = []

    def walk(tp: Any, base: int, path: tuple[str, ...], at: int) -> int:
        if hasattr(tp, "_fields_"):
            for field in tp._fields_:
                name, sub = field[0], field[1]
                offset = base + getattr(tp, name).offset
                if offset > at:
                    fmt.append(f"{offset - at}x")
                    at = offset
                at = walk(sub, offset, (*path, name), at)
            end = base + ct.sizeof(tp)
            if end > at:
                fmt.append(f"{end - at}x")
            return end
        if issubclass(tp, ct.Array):
            if tp._type_ is ct.c_char:
                fmt.append(f"{tp._length_}s")
                paths.append(path)
                return at + ct.sizeof(tp)
            for i in range(tp._length_):
                at = walk(tp._type_, at, (*path, str(i)), at)
            return at
        code = getattr(tp, "_type_", None)
        size = ct.sizeof(tp)
        if code == "?":
            letter = "?"
        elif code == "c":
            letter = "c"
        else:
            letter = _SIZES[size]
            if isinstance(code, str) and code.isupper():
                letter = letter.upper()
        fmt.append(letter)
        paths.append(path)
        return at + size

    walk(ctype, 0, (), 0)
    return "<" + "".join(fmt), paths


class BatchTable:
    """One map's entries as flat tuples: `read()` -> [(key tuple, value tuple)].

    Where the kernel refuses batches for the map, `read()` falls back to
    bcc's entry-by-entry iteration, decoded the same way."""

    def __init__(self, table: Any) -> None:
        from bcc import libbcc  # profiler.bpf is the one layer that imports bcc

        self._lib = libbcc.lib
        self._table = table
        self._batch = True
        self._delete_batch = True
        self._fd = int(table.map_fd)
        self.capacity = int(table.max_entries)
        key_fmt, self.key_paths = layout(table.Key)
        value_fmt, self.value_paths = layout(table.Leaf)
        self._key = struct.Struct(key_fmt)
        self._value = struct.Struct(value_fmt)
        self._size = min(CHUNK, self.capacity)
        self._keys = ct.create_string_buffer(self._key.size * self._size)
        self._values = ct.create_string_buffer(self._value.size * self._size)

    def key_index(self, *path: str) -> int:
        return self.key_paths.index(path)

    def value_index(self, *path: str) -> int:
        return self.value_paths.index(path)

    def read(self) -> list[tuple[tuple[Any, ...], tuple[Any, ...]]]:
        if self._batch:
            try:
                return self._read_batches()
            except BatchUnsupported:
                self._batch = False
        return [(self._key.unpack(bytes(k)), self._value.unpack(bytes(v))) for k, v in self._table.items()]

    def _read_batches(self) -> list[tuple[tuple[Any, ...], tuple[Any, ...]]]:
        out: list[tuple[tuple[Any, ...], tuple[Any, ...]]] = []
        token_in, token_out, count = ct.c_uint32(0), ct.c_uint32(0), ct.c_uint32(0)
        first = True
        while True:
            count.value = self._size
            res = self._lib.bpf_lookup_batch(self._fd, None if first else ct.byref(token_in), ct.byref(token_out),
                                             self._keys, self._values, ct.byref(count))
            err = ct.get_errno() if res != 0 else 0
            if res != 0 and err not in (errno.ENOENT, errno.ENOSPC):
                raise BatchUnsupported(os.strerror(err))
            if res != 0 and err == errno.ENOSPC and count.value == 0:
                # One hash bucket holds more than the buffer: grow it once, up to the capacity.
                if self._size >= self.capacity:
                    raise BatchUnsupported(os.strerror(err))
                self._grow()
                continue
            n = count.value
            if n:
                keys = self._key.iter_unpack(memoryview(self._keys)[: n * self._key.size])
                values = self._value.iter_unpack(memoryview(self._values)[: n * self._value.size])
                out.extend(zip(keys, values))
            if res != 0 and err == errno.ENOENT:
                return out
            if n == 0 or len(out) >= self.capacity:
                return out  # no progress (entries moving under us) or all of them
            token_in.value = token_out.value
            first = False

    def _grow(self) -> None:
        self._size = min(self.capacity, self._size * 4)
        self._keys = ct.create_string_buffer(self._key.size * self._size)
        self._values = ct.create_string_buffer(self._value.size * self._size)

    def delete(self, keys: Sequence[tuple[Any, ...]]) -> None:
        """Delete these keys (BPF_MAP_DELETE_BATCH where the kernel takes it); keys already gone are skipped."""
        pending = list(keys)
        while pending and self._delete_batch:
            chunk = pending[: self._size]
            buf = b"".join(self._key.pack(*key) for key in chunk)
            count = ct.c_uint32(len(chunk))
            if self._lib.bpf_delete_batch(self._fd, buf, ct.byref(count)) == 0:
                pending = pending[len(chunk):]
                continue
            err = ct.get_errno()
            if err != errno.ENOENT:
                self._delete_batch = False  # refused: one by one from here
                pending = pending[count.value:]
                break
            # The kernel stops at the first missing key: skip it, go on after it.
            pending = pending[count.value + 1:]
        for key in pending:
            try:
                del self._table[self._table.Key(*key)]
            except KeyError:
                pass
