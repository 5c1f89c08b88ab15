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

from profiler.errors import ConfigError, FntaxError, InputError

STDOUT = "-"
PRIVATE_DIR_MODE = 0o700
PRIVATE_FILE_MODE = 0o600
# Deeper nesting than any file fntax writes or documents: refused as a bad
# file instead of exhausting the parser's recursion (RecursionError).
MAX_NESTING = 64


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
        os.chmod(tmp, PRIVATE_FILE_MODE)
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


def make_private_dir(path: str | Path) -> Path:
    """Create a directory fntax owns (and any missing parents) mode 0700.

    An existing directory is tightened to 0700 too: it holds baselines and
    calibrations written as root, which no other user needs to list."""
    path = Path(path)
    missing = []
    probe = path
    while not probe.exists():
        missing.append(probe)
        if probe.parent == probe:
            break
        probe = probe.parent
    try:
        for directory in reversed(missing):
            directory.mkdir(mode=PRIVATE_DIR_MODE, exist_ok=True)
            os.chmod(directory, PRIVATE_DIR_MODE)  # mkdir's mode is filtered by the umask
        if not path.is_dir():
            raise InputError(f"{path}: not a directory")
        if stat.S_IMODE(os.stat(path).st_mode) != PRIVATE_DIR_MODE:
            os.chmod(path, PRIVATE_DIR_MODE)
    except OSError as err:
        raise InputError(f"{path}: cannot create directory: {err.strerror}") from err
    return path


def read_bytes(path: str | Path, unreadable: type[FntaxError] = InputError) -> bytes:
    """A file's bytes; a missing or unreadable file is one error naming it."""
    path = Path(path)
    try:
        return path.read_bytes()
    except FileNotFoundError as err:
        raise unreadable(f"{path}: cannot read: no such file") from err
    except IsADirectoryError as err:
        raise unreadable(f"{path}: cannot read: is a directory") from err
    except OSError as err:
        raise unreadable(f"{path}: cannot read: {err.strerror}") from err


def decode_text(raw: bytes, path: str | Path, what: str) -> str:
    """UTF-8 text, or one ConfigError saying the file is binary (a PNG given as a config)."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path}: not a {what} (binary content at byte {err.start})") from err


def read_text(path: str | Path, what: str, unreadable: type[FntaxError] = InputError) -> str:
    return decode_text(read_bytes(path, unreadable), path, what)


def _nesting(text: str) -> int:
    """Deepest bracket nesting of a JSON or flow-YAML text (strings included: an overestimate)."""
    depth = deepest = 0
    for char in text:
        if char in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif char in "]}":
            depth = max(0, depth - 1)
    return deepest


def parse_yaml(text: str, path: str | Path, what: str) -> Any:
    """YAML (or JSON) text as Python data; any parse problem is one ConfigError naming the file."""
    import yaml

    if _nesting(text) > MAX_NESTING:
        raise ConfigError(f"{path}: not a valid {what} (nested more than {MAX_NESTING} levels)")
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        raise ConfigError(f"{path}: not valid YAML{where} (not a readable {what})") from err
    except (RecursionError, ValueError, OverflowError) as err:
        raise ConfigError(f"{path}: not a valid {what} ({type(err).__name__})") from err


def load_yaml(path: str | Path, what: str, unreadable: type[FntaxError] = InputError) -> Any:
    return parse_yaml(read_text(path, what, unreadable), path, what)


def read_json(path: str | Path, expect_version: int | None = None) -> dict[str, Any]:
    """Read a JSON object, checking its `version` when asked to."""
    path = Path(path)
    text = read_text(path, "JSON file")
    if _nesting(text) > MAX_NESTING:
        raise ConfigError(f"{path}: not valid JSON (nested more than {MAX_NESTING} levels)")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise ConfigError(f"{path}: not valid JSON (line {err.lineno}: {err.msg})") from err
    except (RecursionError, ValueError) as err:
        # Python refuses integers of more than 4,300 digits with a plain ValueError.
        raise ConfigError(f"{path}: not valid JSON ({str(err).splitlines()[0]})") from err
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a JSON object at the top level")
    version = data.get("version")
    if expect_version is not None and (isinstance(version, bool) or not isinstance(version, int)
                                       or version != expect_version):
        raise ConfigError(f"{path}: field 'version' is {_short(version)}, expected {expect_version}")
    return data


def _short(value: Any, limit: int = 40) -> str:
    """A value quoted for an error line: one line, bounded."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
