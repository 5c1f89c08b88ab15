"""Placeholder: replaced by the decompression work (see probes/decompress.bpf.c)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

LIBRARIES: tuple[str, ...] = ("libz", "libzstd", "liblzma", "libbz2", "liblz4")


@dataclass(frozen=True)
class UprobeTarget:
    library: str
    path: str
    symbol: str
    entry_fn: str
    return_fn: str | None


def discover(extra: Sequence[str] = ()) -> list[UprobeTarget]:
    return []
