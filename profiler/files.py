"""Versioned JSON files fntax writes and reads (captures, baselines, calibration).

Writes are atomic (temp file in the same directory, fsync, rename) with mode
0600, so an interrupted run never leaves a half-written file. fntax runs as
root, so a rename must never land on anything but a regular file the user
meant: a device, FIFO or socket (`/dev/null`, `/dev/stdout`) is written into
as it is, a symlink is followed to its target, and `-` is standard output.
Reads name the file and the field on any error.
"""

from __future__ import annotations

import json
import os
import stat
import sys
import tempfile
from pathlib import Path
from typing import Any

from profiler.errors import ConfigError, InputError

STDOUT = "-"


def _target(path: Path) -> Path:
    """The path a write lands on: a symlink's target, else the path itself."""
    return Path(os.path.realpath(path)) if path.is_symlink() else path


def _is_special(path: Path) -> bool:
    """An existing file that is not a regular file (device, FIFO, socket)."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return False
    return not stat.S_ISREG(mode) and not stat.S_ISDIR(mode)


def check_writable_destination(path: str | Path) -> None:
    """Fail before a long capture, not after it, when the output cannot be written.

    The check creates (and removes) a file where the output will go: as root
    `os.access` says yes to read-only filesystems such as /proc."""
    if str(path) == STDOUT:
        return
    path = _target(Path(path))
    if path.is_dir():
        raise InputError(f"{path}: is a directory")
    if _is_special(path):
        if not os.access(path, os.W_OK):
            raise InputError(f"{path}: not writable")
        return
    directory = path.parent
    if not directory.is_dir():
        raise InputError(f"{path}: directory {directory} does not exist")
    try:
        fd, probe = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".check", dir=directory)
    except OSError as err:
        raise InputError(f"{path}: cannot write in {directory}: {err.strerror}") from err
    os.close(fd)
    os.unlink(probe)


def _dump(data: Any) -> str:
    return json.dumps(data, indent=2, sort_keys=False) + "\n"


def write_json_atomic(path: str | Path, data: Any) -> None:
    """Write JSON: atomically to a regular file, straight into stdout or a device."""
    text = _dump(data)
    if str(path) == STDOUT:
        sys.stdout.write(text)
        sys.stdout.flush()
        return
    path = _target(Path(path))
    check_writable_destination(path)
    if _is_special(path):
        try:
            with open(path, "w") as out:
                out.write(text)
        except OSError as err:
            raise InputError(f"{path}: cannot write: {err.strerror}") from err
        return
    directory = path.parent
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "w") as out:
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except OSError as err:
        _unlink_quietly(tmp)
        raise InputError(f"{path}: cannot write: {err.strerror}") from err
    except BaseException:
        _unlink_quietly(tmp)
        raise


def _unlink_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def read_json(path: str | Path, expect_version: int | None = None) -> dict[str, Any]:
    """Read a JSON object, checking its `version` when asked to."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError as err:
        raise InputError(f"{path}: no such file") from err
    except IsADirectoryError as err:
        raise InputError(f"{path}: is a directory") from err
    except OSError as err:
        raise InputError(f"{path}: cannot read: {err.strerror}") from err
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path}: not a JSON file (binary content at byte {err.start})") from err
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise ConfigError(f"{path}: not valid JSON (line {err.lineno}: {err.msg})") from err
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a JSON object at the top level")
    if expect_version is not None and data.get("version") != expect_version:
        raise ConfigError(f"{path}: field 'version' is {data.get('version')!r}, expected {expect_version}")
    return data
