"""Decompressor discovery on this host (no kernel needed)."""

from __future__ import annotations

import pytest

from profiler.bpf.decompress_targets import discover, parse_extra
from profiler.errors import ConfigError


def test_decoders_found_and_encoders_not() -> None:
    targets = discover()
    by_symbol = {(t.library, t.symbol): t for t in targets}
    assert ("libz", "inflate") in by_symbol and ("libbz2", "BZ2_bzDecompress") in by_symbol
    assert not any(t.symbol in ("deflate", "compress", "compress2", "ZSTD_compress") for t in targets)
    assert by_symbol[("libz", "inflate")].return_fn is not None
    lzma_code = by_symbol[("liblzma", "lzma_code")]
    assert lzma_code.entry_fn == "fntax_lzma_code_enter"


def test_extra_pairs() -> None:
    targets = discover(["libz.so.1:deflate", "libcrypt:crypt"])
    extra = [t for t in targets if t.symbol in ("deflate", "crypt")]
    assert {t.library for t in extra} == {"libz", "libcrypt"}
    assert [t.lib_id for t in extra if t.library == "libcrypt"] == [5]


@pytest.mark.parametrize("spec, message", [
    ("nocolon", "expected LIBRARY_OR_BINARY:SYMBOL"),
    (":inflate", "expected LIBRARY_OR_BINARY:SYMBOL"),
    ("libnosuchthing:foo", "not found"),
    ("libz.so.1:no_such_symbol", "does not export no_such_symbol"),
])
def test_bad_extra_specs(spec: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        discover([spec])


def test_parse_extra_keeps_paths() -> None:
    assert parse_extra("/usr/bin/gzip:inflate") == ("/usr/bin/gzip", "inflate")
