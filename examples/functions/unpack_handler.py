"""An example function: receive a gzip'd tarball, unpack it in memory, index it.

Shaped like a Lambda handler run once per event by a custom runtime: the
interesting part for fntax is how much of its duration is the OS (exec,
page faults of a fresh interpreter, syscalls, decompression in libz).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import sys
import tarfile


def make_event(path: str, files: int = 200, size: int = 64 * 1024) -> None:
    """Write the bundled event payload: a .tar.gz of semi-compressible files."""
    rng = hashlib.sha256(b"fntax-example")
    with tarfile.open(path, "w:gz") as tar:
        for i in range(files):
            chunks = []
            while sum(map(len, chunks)) < size:
                rng.update(i.to_bytes(4, "little"))
                digest = rng.hexdigest().encode()
                chunks.append(digest * 4)  # repetitive enough to compress ~2-3x
            data = b"".join(chunks)[:size]
            info = tarfile.TarInfo(f"payload/file{i:04d}.txt")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def handler(event_path: str) -> dict[str, object]:
    with open(event_path, "rb") as event:
        blob = event.read()
    index = {}
    with tarfile.open(fileobj=io.BytesIO(blob), mode="r:gz") as tar:
        for member in tar:
            extracted = tar.extractfile(member)
            if extracted is not None:
                index[member.name] = hashlib.sha1(extracted.read()).hexdigest()
    return {"files": len(index), "bytes_in": len(blob)}


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--make-event":
        make_event(sys.argv[2])
        sys.exit(0)
    if len(sys.argv) != 2 or not os.path.exists(sys.argv[1]):
        print("usage: unpack_handler.py EVENT.tar.gz | --make-event PATH", file=sys.stderr)
        sys.exit(2)
    print(json.dumps(handler(sys.argv[1])))
