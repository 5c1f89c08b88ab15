"""Variant C: unpack while downloading (the response streams into tarfile).

Usage: unpack_c_stream.py URL
"""

from __future__ import annotations

import json
import os
import sys
import tarfile
import tempfile
import urllib.request


def handler(url: str) -> dict[str, int]:
    files = size = 0
    with tempfile.TemporaryDirectory(prefix="fn-c-") as scratch, urllib.request.urlopen(url) as response:
        with tarfile.open(fileobj=response, mode="r|gz") as tar:
            for member in tar:
                tar.extract(member, os.path.join(scratch, "out"))
                if member.isfile():
                    files += 1
                    size += member.size
    return {"files": files, "bytes": size}


if __name__ == "__main__":
    print(json.dumps(handler(sys.argv[1])))
