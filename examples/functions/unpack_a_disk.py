"""Variant A: download to disk in small chunks, then unpack the file.

Usage: unpack_a_disk.py URL
"""

from __future__ import annotations

import json
import os
import sys
import tarfile
import tempfile
import urllib.request

CHUNK = 4096


def handler(url: str) -> dict[str, int]:
    with tempfile.TemporaryDirectory(prefix="fn-a-") as scratch:
        archive = os.path.join(scratch, "event.tar.gz")
        with urllib.request.urlopen(url) as response, open(archive, "wb") as out:
            while chunk := response.read(CHUNK):
                out.write(chunk)
        with tarfile.open(archive, "r:gz") as tar:
            members = tar.getmembers()
            tar.extractall(os.path.join(scratch, "out"))
        size = sum(m.size for m in members if m.isfile())
        return {"files": sum(1 for m in members if m.isfile()), "bytes": size}


if __name__ == "__main__":
    print(json.dumps(handler(sys.argv[1])))
