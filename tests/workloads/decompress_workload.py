"""Decompress known payloads through the system libraries, timing each call itself.

Usage: decompress_workload.py OUT.json [MEGABYTES] [REPEAT]

First compresses the payload with each library (compression must not be
counted as decompression), then decodes it with ONE one-shot call per
library and repetition (uncompress, ZSTD_decompress,
lzma_stream_buffer_decode, BZ2_bzBuffToBuffDecompress, LZ4_decompress_safe),
timing each call with perf_counter_ns around the ctypes call, and writes
{library: {"calls": n, "seconds": s}} to OUT.
"""

from __future__ import annotations

import ctypes
import json
import random
import sys
import time

c_size_t = ctypes.c_size_t
c_void_p = ctypes.c_void_p


def payload(megabytes: int) -> bytes:
    rng = random.Random(7)
    words = [bytes(rng.choice(b"abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(3, 9)))
             for _ in range(5000)]
    out = bytearray()
    while len(out) < megabytes << 20:
        out += rng.choice(words) + b" "
    return bytes(out[: megabytes << 20])


def main() -> None:
    out_path = sys.argv[1]
    megabytes = int(sys.argv[2]) if len(sys.argv) > 2 else 16
    repeat = int(sys.argv[3]) if len(sys.argv) > 3 else 1
    data = payload(megabytes)
    n = len(data)
    results: dict[str, dict[str, float]] = {}
    back = ctypes.create_string_buffer(n)

    def timed(library: str, call) -> int:  # type: ignore[no-untyped-def]
        start = time.perf_counter_ns()
        value = call()
        spent = time.perf_counter_ns() - start
        entry = results.setdefault(library, {"calls": 0, "seconds": 0.0})
        entry["calls"] += 1
        entry["seconds"] += spent / 1e9
        assert back.raw == data, library
        ctypes.memset(back, 0, n)
        return int(value)

    z = ctypes.CDLL("libz.so.1")
    bound = ctypes.c_ulong(z.compressBound(ctypes.c_ulong(n)))
    zbuf = ctypes.create_string_buffer(bound.value)
    assert z.compress2(zbuf, ctypes.byref(bound), data, ctypes.c_ulong(n), 6) == 0
    zsize = bound.value

    zs = ctypes.CDLL("libzstd.so.1")
    zs.ZSTD_compressBound.restype = c_size_t
    zs.ZSTD_compress.restype = c_size_t
    zs.ZSTD_compress.argtypes = [c_void_p, c_size_t, c_void_p, c_size_t, ctypes.c_int]
    zs.ZSTD_decompress.restype = c_size_t
    zs.ZSTD_decompress.argtypes = [c_void_p, c_size_t, c_void_p, c_size_t]
    zsbound = zs.ZSTD_compressBound(c_size_t(n))
    zsbuf = ctypes.create_string_buffer(zsbound)
    zssize = zs.ZSTD_compress(zsbuf, zsbound, data, n, 3)

    xz = ctypes.CDLL("liblzma.so.5")
    xz.lzma_stream_buffer_bound.restype = c_size_t
    xzbound = xz.lzma_stream_buffer_bound(c_size_t(n))
    xzbuf = ctypes.create_string_buffer(xzbound)
    xzpos = c_size_t(0)
    assert xz.lzma_easy_buffer_encode(ctypes.c_uint32(1), 0, None, data, c_size_t(n), xzbuf,
                                      ctypes.byref(xzpos), c_size_t(xzbound)) == 0

    bz = ctypes.CDLL("libbz2.so.1.0")
    bzlen = ctypes.c_uint(n + n // 100 + 600)
    bzbuf = ctypes.create_string_buffer(bzlen.value)
    assert bz.BZ2_bzBuffToBuffCompress(bzbuf, ctypes.byref(bzlen), data, ctypes.c_uint(n), 9, 0, 0) == 0

    lz = ctypes.CDLL("liblz4.so.1")
    lzbound = lz.LZ4_compressBound(n)
    lzbuf = ctypes.create_string_buffer(lzbound)
    lzsize = lz.LZ4_compress_default(data, lzbuf, n, lzbound)
    assert lzsize > 0

    for _ in range(repeat):
        dest_len = ctypes.c_ulong(n)
        timed("libz", lambda: z.uncompress(back, ctypes.byref(dest_len), zbuf, ctypes.c_ulong(zsize)))
        timed("libzstd", lambda: zs.ZSTD_decompress(back, n, zsbuf, zssize))
        memlimit = ctypes.c_uint64(1 << 30)
        in_pos, out_pos = c_size_t(0), c_size_t(0)
        timed("liblzma", lambda: xz.lzma_stream_buffer_decode(
            ctypes.byref(memlimit), ctypes.c_uint32(0), None, xzbuf, ctypes.byref(in_pos), xzpos,
            back, ctypes.byref(out_pos), c_size_t(n)))
        out_len = ctypes.c_uint(n)
        timed("libbz2", lambda: bz.BZ2_bzBuffToBuffDecompress(back, ctypes.byref(out_len), bzbuf, bzlen, 0, 0))
        timed("liblz4", lambda: lz.LZ4_decompress_safe(lzbuf, back, lzsize, n))
    with open(out_path, "w") as out:
        json.dump(results, out)


if __name__ == "__main__":
    main()
