"""Where the decompressors are on this host, and which probe goes where.

Built-in: zlib, zstd, liblzma (decoders only), libbz2 and lz4 decoder entry
points, found through the dynamic linker's cache; a symbol the library does
not export is skipped. More (binary or library, symbol) pairs come from
`--decompressor LIB:SYMBOL`; each extra library gets its own id (and label).
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from profiler.bpf.contracts import decompressor_ids
from profiler.errors import ConfigError, FntaxError
from profiler.files import write_json_atomic

# Library ids come from enum fntax_decomp_lib in probes/fntax.h (the probes
# know lzma's id); extra libraries take ids from its EXTRA up to its LAST.
_IDS, _FIRST_EXTRA_ID, MAX_LIBRARY_ID = decompressor_ids()
LIBRARIES: tuple[str, ...] = tuple(sorted(_IDS, key=_IDS.__getitem__))

_SONAMES = {
    "libz": ("libz.so.1", "libz.so"),
    "libzstd": ("libzstd.so.1", "libzstd.so"),
    "liblzma": ("liblzma.so.5", "liblzma.so"),
    "libbz2": ("libbz2.so.1.0", "libbz2.so.1", "libbz2.so"),
    "liblz4": ("liblz4.so.1", "liblz4.so"),
}

# Decoder entry points only (deflate, compress, ZSTD_compress*, encoders are
# not here), and only the ones every decode passes through: one-shot helpers
# that call these (uncompress -> inflate, BZ2_bzBuffToBuffDecompress ->
# BZ2_bzDecompress, ZSTD_decompress_usingDict -> internal) are covered by
# them. Each uprobe costs ~0.1 s to detach (the kernel waits for a grace
# period per probe), so the list stays short.
_PLAIN = {
    "libz": ("inflate",),
    "libzstd": ("ZSTD_decompress", "ZSTD_decompressDCtx", "ZSTD_decompressStream", "ZSTD_decompress_usingDDict"),
    "liblzma": ("lzma_stream_buffer_decode", "lzma_raw_buffer_decode"),
    "libbz2": ("BZ2_bzDecompress",),
    "liblz4": ("LZ4_decompress_safe", "LZ4_decompress_fast", "LZ4F_decompress"),
}
_LZMA_DECODER_INITS = ("lzma_stream_decoder", "lzma_auto_decoder", "lzma_alone_decoder", "lzma_raw_decoder")
# lzma_end retires a decoder stream (a stream reused as an encoder without
# lzma_end would stay marked: no library user does that).
_LZMA_FORGET = ("lzma_end",)

RETURN_FN = "fntax_decomp_return"


@dataclass(frozen=True)
class UprobeTarget:
    library: str  # label in captures and metrics
    lib_id: int
    path: str
    symbol: str
    entry_fn: str
    return_fn: str | None


# What ldconfig and nm said, kept across runs (each capture used to start
# six programs for it, 0.14 s of its time to result): keyed by the stat of
# the file the answer came from, so an upgraded library is read again.
_CACHE = Path(os.environ.get("FNTAX_HOME", "/var/lib/fntax")) / "cache" / "elf-symbols.json"
_LD_SO_CACHE = "/etc/ld.so.cache"


def _stamp(path: str) -> list[int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return [st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns]


@functools.lru_cache(maxsize=1)
def _cache() -> dict[str, Any]:
    try:
        loaded = json.loads(_CACHE.read_text())
    except (OSError, ValueError):
        return {}
    return loaded if isinstance(loaded, dict) else {}


def _remembered(key: str, stamp: list[int] | None, compute: Callable[[], Any]) -> Any:
    """compute(), or what it gave last time for a file of the same stamp."""
    entry = _cache().get(key)
    if stamp is not None and isinstance(entry, dict) and entry.get("stamp") == stamp:
        return entry["value"]
    value = compute()
    if stamp is not None:
        _cache()[key] = {"stamp": stamp, "value": value}
        # A cache, never a reason to fail; kept only where fntax keeps its
        # state already (a rejected --decompressor must leave nothing behind).
        if _CACHE.parent.is_dir():
            with contextlib.suppress(OSError, FntaxError):
                write_json_atomic(_CACHE, _cache())
    return value


@functools.lru_cache(maxsize=1)
def _ldconfig() -> dict[str, str]:
    """soname -> path for this machine's architecture, from the linker cache."""
    found: dict[str, str] = _remembered("ldconfig", _stamp(_LD_SO_CACHE), _run_ldconfig)
    return found


def _run_ldconfig() -> dict[str, str]:
    try:
        out = subprocess.run(["ldconfig", "-p"], capture_output=True, text=True, check=False).stdout
    except OSError:
        return {}
    found: dict[str, str] = {}
    for line in out.splitlines():
        match = re.match(r"\s*(\S+) \(([^)]*)\) => (\S+)", line)
        if match and ("x86-64" in match.group(2) or os.uname().machine not in ("x86_64",)):
            found.setdefault(match.group(1), match.group(3))
    return found


@functools.lru_cache(maxsize=64)
def exported_symbols(path: str) -> frozenset[str]:
    """Defined dynamic symbols of an ELF file (nm -D), without version suffixes."""
    return frozenset(_remembered(f"nm:{path}", _stamp(path), lambda: sorted(_run_nm(path))))


def _run_nm(path: str) -> frozenset[str]:
    try:
        out = subprocess.run(["nm", "-D", "--defined-only", path], capture_output=True, text=True,
                             check=False).stdout
    except OSError:
        return frozenset()
    names = set()
    for line in out.splitlines():
        parts = line.split()
        if len(parts) >= 3 and parts[1] in ("T", "W", "i"):
            names.add(parts[2].split("@")[0])
    return frozenset(names)


def find_library(name: str) -> str | None:
    """A library by label (libz), soname (libz.so.1) or path."""
    if os.sep in name:
        return os.path.realpath(name) if os.path.exists(name) else None
    cache = _ldconfig()
    for soname in _SONAMES.get(name, (name,)):
        if soname in cache:
            return os.path.realpath(cache[soname])
    for soname, path in cache.items():
        if soname.startswith(name + ".so"):
            return os.path.realpath(path)
    return None


def _label(spec_lib: str) -> str:
    return Path(spec_lib).name.split(".so")[0]


def parse_extra(spec: str) -> tuple[str, str]:
    lib, sep, symbol = spec.rpartition(":")
    if not sep or not lib or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.@]*", symbol):
        raise ConfigError(f"bad decompressor {spec!r}: expected LIBRARY_OR_BINARY:SYMBOL")
    return lib, symbol


def discover(extra: Sequence[str] = ()) -> list[UprobeTarget]:
    targets: list[UprobeTarget] = []
    for library in LIBRARIES:
        lib_id = _IDS[library]
        path = find_library(library)
        if path is None:
            continue
        exported = exported_symbols(path)
        entry = f"fntax_decomp_enter_{lib_id}"
        for symbol in _PLAIN[library]:
            if symbol in exported:
                targets.append(UprobeTarget(library, lib_id, path, symbol, entry, RETURN_FN))
        if library == "liblzma":
            if "lzma_code" in exported:
                targets.append(UprobeTarget(library, lib_id, path, "lzma_code", "fntax_lzma_code_enter", RETURN_FN))
            targets += [UprobeTarget(library, lib_id, path, s, "fntax_lzma_decoder_init", None)
                        for s in _LZMA_DECODER_INITS if s in exported]
            targets += [UprobeTarget(library, lib_id, path, s, "fntax_lzma_forget", None)
                        for s in _LZMA_FORGET if s in exported]
    extra_ids: dict[str, int] = {}
    for spec in extra:
        lib, symbol = parse_extra(spec)
        path = find_library(lib)
        if path is None:
            raise ConfigError(f"decompressor {spec!r}: library or binary {lib!r} not found")
        if symbol not in exported_symbols(path):
            raise ConfigError(f"decompressor {spec!r}: {path} does not export {symbol}")
        label = _label(lib)
        if label in LIBRARIES:
            lib_id = _IDS[label]
        else:
            lib_id = extra_ids.setdefault(label, _FIRST_EXTRA_ID + len(extra_ids))
            if lib_id > MAX_LIBRARY_ID:
                raise ConfigError(f"too many extra decompressor libraries (at most {MAX_LIBRARY_ID + 1 - _FIRST_EXTRA_ID})")
        targets.append(UprobeTarget(label, lib_id, path, symbol, f"fntax_decomp_enter_{lib_id}", RETURN_FN))
    return targets
