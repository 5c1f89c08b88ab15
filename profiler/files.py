"""Versioned JSON files fntax writes and reads (captures, baselines, calibration).

Writes are atomic (temp file in the same directory, fsync, rename) with mode
0600, so an interrupted run never leaves a half-written file. Reads name the
file and the field on any error.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from profiler.errors import ConfigError, InputError


def check_writable_destination(path: str | Path) -> None:
    """Fail before a long capture, not after it, when the output cannot be written."""
    path = Path(path)
    directory = path.parent
    if not directory.is_dir():
        raise InputError(f"{path}: directory {directory} does not exist")
    if path.is_dir():
        raise InputError(f"{path}: is a directory")
    if not os.access(directory, os.W_OK):
        raise InputError(f"{path}: directory {directory} is not writable")


def write_json_atomic(path: str | Path, data: Any) -> None:
    path = Path(path)
    check_writable_destination(path)
    directory = path.parent
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "w") as out:
            json.dump(data, out, indent=2, sort_keys=False)
            out.write("\n")
            out.flush()
            os.fsync(out.fileno())
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def read_json(path: str | Path, expect_version: int | None = None) -> dict[str, Any]:
    """Read a JSON object, checking its `version` when asked to."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError as err:
        raise InputError(f"{path}: no such file") from err
    except OSError as err:
        raise InputError(f"{path}: cannot read: {err.strerror}") from err
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise ConfigError(f"{path}: not valid JSON (line {err.lineno}: {err.msg})") from err
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a JSON object at the top level")
    if expect_version is not None and data.get("version") != expect_version:
        raise ConfigError(f"{path}: field 'version' is {data.get('version')!r}, expected {expect_version}")
    return data
