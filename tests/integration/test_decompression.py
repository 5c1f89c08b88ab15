"""Decompression time and calls agree with the workload's own timing."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Callable

import pytest

from conftest import WORKLOADS  # type: ignore[import-not-found]

pytestmark = pytest.mark.bpf


def test_decoder_calls_and_time_match_the_workloads_own_timing(
        run_profile: Callable[..., dict[str, Any]], tmp_path: Path) -> None:
    own = tmp_path / "own.json"
    capture = run_profile([sys.executable, str(WORKLOADS / "decompress_workload.py"), str(own), "16", "2"])
    truth = json.loads(own.read_text())
    seen = capture["workload"]["decompression"]["by_library"]
    assert set(truth) == {"libz", "libzstd", "liblzma", "libbz2", "liblz4"}
    for library, expected in truth.items():
        # One-shot calls: exactly the workload's calls. The compression pass
        # (compress2, ZSTD_compress, lzma_easy_buffer_encode, ...) adds none.
        assert seen[library]["count"] == expected["calls"], library
        assert seen[library]["seconds"] == pytest.approx(expected["seconds"], rel=0.05), library
    total = capture["workload"]["decompression"]
    assert total["calls"] == sum(e["calls"] for e in truth.values())


def test_python_streaming_decoders_are_seen(run_profile: Callable[..., dict[str, Any]]) -> None:
    # lzma_code serves encoders and decoders: only the decoder stream counts.
    script = ("import lzma, zlib, bz2\n"
              "d = b'fntax ' * 400000\n"
              "x = lzma.compress(d, preset=1)\n"
              "assert lzma.decompress(x) == d\n"
              "assert zlib.decompress(zlib.compress(d)) == d\n")
    capture = run_profile([sys.executable, "-c", script])
    seen = capture["workload"]["decompression"]["by_library"]
    assert seen["liblzma"]["count"] >= 1 and seen["libz"]["count"] >= 1
    assert "libbz2" not in seen


def test_compression_only_counts_nothing(run_profile: Callable[..., dict[str, Any]]) -> None:
    script = ("import lzma, zlib, bz2\n"
              "d = b'fntax ' * 400000\n"
              "lzma.compress(d, preset=1); zlib.compress(d); bz2.compress(d)\n")
    capture = run_profile([sys.executable, "-c", script])
    assert capture["workload"]["decompression"]["calls"] == 0
