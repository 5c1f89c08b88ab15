"""Where fntax writes: never a rename over anything but a regular file the user meant."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from profiler.errors import InputError
from profiler.files import check_writable_destination, write_json_atomic


def test_dash_writes_to_standard_output(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    os.chdir(tmp_path)
    write_json_atomic("-", {"version": 1})
    assert json.loads(capsys.readouterr().out) == {"version": 1}
    assert not (tmp_path / "-").exists()


def test_character_device_is_written_into_not_replaced() -> None:
    write_json_atomic("/dev/null", {"a": 1})
    assert stat.S_ISCHR(os.stat("/dev/null").st_mode)


def test_full_device_fails_with_one_error_and_stays_a_device() -> None:
    with pytest.raises(InputError, match="/dev/full: cannot write"):
        write_json_atomic("/dev/full", {"a": 1})
    assert stat.S_ISCHR(os.stat("/dev/full").st_mode)


def test_fifo_is_written_into(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    try:
        write_json_atomic(fifo, {"a": 1})
        assert json.loads(os.read(reader, 4096)) == {"a": 1}
    finally:
        os.close(reader)
    assert stat.S_ISFIFO(os.stat(fifo).st_mode)


def test_symlink_is_followed_to_its_target(tmp_path: Path) -> None:
    target = tmp_path / "real.json"
    target.write_text("{}")
    link = tmp_path / "link.json"
    link.symlink_to(target)
    write_json_atomic(link, {"a": 1})
    assert link.is_symlink()
    assert json.loads(target.read_text()) == {"a": 1}
    assert stat.S_IMODE(os.stat(target).st_mode) == 0o600


def test_regular_file_is_replaced_atomically_mode_0600(tmp_path: Path) -> None:
    out = tmp_path / "out.json"
    out.write_text("old")
    write_json_atomic(out, {"a": 1})
    assert json.loads(out.read_text()) == {"a": 1}
    assert stat.S_IMODE(os.stat(out).st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]


def test_unwritable_place_is_refused_before_the_work() -> None:
    # As root os.access says yes to /proc; the up-front check must not.
    with pytest.raises(InputError, match="/proc"):
        check_writable_destination("/proc/out.json")
