"""Variant B: read the whole download into memory, then unpack from memory.

Usage: unpack_b_memory.py URL
"""

from __future__ import annotations

import io
import json
import os
import sys
import tarfile
import tempfile
import urllib.request


def handler(url: str) -> dict[str, int]:
    with urllib.request.urlopen(url) as response:
        blob = response.read()
    with tempfile.TemporaryDirectory(prefix="fn-b-") as scratch:
        with tarfile.open(fileobj=io.BytesIO(blob), mode="r:gz") as tar:
            members = tar.getmembers()
            tar.extractall(os.path.join(scratch, "out"))
        return {"files": sum(1 for m in members if m.isfile()), "bytes": sum(m.size for m in members if m.isfile())}


if __name__ == "__main__":
    print(json.dumps(handler(sys.argv[1])))
