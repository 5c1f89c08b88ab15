"""--keep-capabilities: parsing, the capability bitmasks, and the drop itself in a child process.

The drop runs in a subprocess so the test process keeps its own capabilities;
no probes are involved (tests/integration/test_least_privilege.py drops a real agent's).
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st

from profiler.agent import privileges
from profiler.agent.privileges import (
    BIT,
    CAPABILITIES,
    DEFAULT_KEEP,
    Dropped,
    describe,
    mask_of,
    names_of,
    parse_keep,
    summary,
)
from profiler.errors import InputError

FNTAX = str(Path(sys.executable).with_name("fntax"))


def _status_mask(field: str, pid: str = "self") -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1], 16)
    raise AssertionError(field)


def test_bits_follow_linux_capability_h() -> None:
    # Spot checks against linux/capability.h.
    assert BIT["chown"] == 0 and BIT["dac_read_search"] == 2 and BIT["setpcap"] == 8
    assert BIT["sys_ptrace"] == 19 and BIT["sys_admin"] == 21 and BIT["sys_resource"] == 24
    assert BIT["perfmon"] == 38 and BIT["bpf"] == 39 and BIT["checkpoint_restore"] == 40
    assert len(set(CAPABILITIES)) == len(CAPABILITIES)


@pytest.mark.parametrize("text, expected", [
    ("sys_ptrace", {"sys_ptrace"}),
    ("CAP_SYS_PTRACE,cap_dac_read_search", {"sys_ptrace", "dac_read_search"}),
    (" bpf , PERFMON ,bpf", {"bpf", "perfmon"}),
    ("none", set()),
    ("NONE", set()),
])
def test_parse_keep(text: str, expected: set[str]) -> None:
    assert parse_keep(text) == frozenset(expected)


def test_all_keeps_everything() -> None:
    assert parse_keep("all") is None
    assert parse_keep("ALL") is None


@pytest.mark.parametrize("text, needle", [
    ("sys_ptrce", "unknown capability 'sys_ptrce'"),
    ("bpf,cap_nothing", "unknown capability 'cap_nothing'"),
    ("", "empty"),
    (" , ", "empty"),
    ("all,bpf", "all cannot be combined"),
    ("none,bpf", "none cannot be combined"),
])
def test_bad_values_are_input_errors(text: str, needle: str) -> None:
    with pytest.raises(InputError, match=needle):
        parse_keep(text)


@given(st.sets(st.sampled_from(CAPABILITIES)))
def test_mask_and_names_round_trip(names: set[str]) -> None:
    mask = mask_of(names)
    assert set(names_of(mask)) == names
    assert mask == sum(1 << BIT[name] for name in names)


def test_names_of_orders_by_bit_and_names_unknown_bits() -> None:
    assert names_of(mask_of({"sys_ptrace", "dac_read_search"})) == ["dac_read_search", "sys_ptrace"]
    assert names_of(1 << 50 | 1) == ["chown", "cap_50"]
    assert names_of(0) == []
    assert describe(set()) == "none"
    assert describe({"sys_ptrace", "chown"}) == "chown, sys_ptrace"


def test_summary_says_what_was_kept_and_what_stops() -> None:
    minimal = Dropped(kept=frozenset(DEFAULT_KEEP), not_held=frozenset(), bounding_lowered=True)
    line = summary(minimal)
    assert "kept: dac_read_search, sys_ptrace" in line and "statistics stay off" in line
    assert not minimal.bpf_stats
    with_stats = Dropped(kept=frozenset({"sys_admin"}), not_held=frozenset({"bpf"}), bounding_lowered=False)
    assert with_stats.bpf_stats and "statistics" not in summary(with_stats)
    assert "not held, so not kept: bpf" in summary(with_stats)
    assert "all kept" in summary(None)


def test_capget_agrees_with_proc_status() -> None:
    sets = privileges.get_sets()
    assert sets.effective == _status_mask("CapEff")
    assert sets.permitted == _status_mask("CapPrm")
    assert sets.inheritable == _status_mask("CapInh")


def test_cli_default_is_the_minimal_set() -> None:
    from profiler.cli import agent

    (option,) = [p for p in agent.params if p.name == "keep_capabilities"]
    assert isinstance(option.default, str)
    assert parse_keep(option.default) == frozenset(DEFAULT_KEEP)
    assert "sys_admin" not in DEFAULT_KEEP  # loading needs it, running does not


@pytest.mark.parametrize("value", ["sys_ptrce", "all,bpf", ","])
def test_cli_bad_value_is_one_line_and_exit_66(value: str) -> None:
    # Fails before anything loads: no root, no probes.
    result = subprocess.run([FNTAX, "agent", "--keep-capabilities", value], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 66, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("fntax: --keep-capabilities"), result.stderr
    assert "Traceback" not in result.stderr


def test_cli_help_names_the_option() -> None:
    from profiler.cli import main

    out = CliRunner().invoke(main, ["agent", "--help"]).output
    assert "--keep-capabilities" in out and "dac_read_search,sys_ptrace" in out


_CHILD = textwrap.dedent("""
    import json, sys, threading
    from profiler.agent import privileges
    if sys.argv[1] == "thread":
        started = threading.Event()
        threading.Thread(target=lambda: (started.set(), threading.Event().wait()), daemon=True).start()
        started.wait()
    try:
        dropped = privileges.drop(privileges.parse_keep(sys.argv[2]))
    except privileges.PrivilegeError as err:
        print(json.dumps({"error": str(err)}))
        sys.exit(0)
    status = {line.split(":")[0]: line.split()[1] for line in open("/proc/self/status")
              if line.startswith(("Cap", "NoNewPrivs"))}
    print(json.dumps({"kept": sorted(dropped.kept) if dropped else None, "status": status,
                      "bounding": dropped.bounding_lowered if dropped else None}))
""")


def _child(mode: str, keep: str) -> dict[str, Any]:
    import json

    out = subprocess.run([sys.executable, "-c", _CHILD, mode, keep], capture_output=True, text=True, timeout=60,
                         check=True, cwd=Path(__file__).resolve().parents[2])
    result: dict[str, Any] = json.loads(out.stdout)
    return result


def test_drop_lowers_every_set_of_a_child() -> None:
    held = set(names_of(_status_mask("CapPrm")))
    result = _child("single", "sys_ptrace,dac_read_search,bpf")
    expected = {"sys_ptrace", "dac_read_search", "bpf"} & held
    assert set(result["kept"]) == expected
    status = result["status"]
    mask = mask_of(expected)
    assert int(status["CapEff"], 16) == mask and int(status["CapPrm"], 16) == mask
    assert int(status["CapInh"], 16) & ~mask == 0 and int(status["CapAmb"], 16) == 0
    assert status["NoNewPrivs"] == "1"
    if "setpcap" in held:
        assert result["bounding"] is True and int(status["CapBnd"], 16) == mask


def test_all_drops_nothing() -> None:
    result = _child("single", "all")
    status = result["status"]
    assert int(status["CapEff"], 16) == _status_mask("CapEff") and status["NoNewPrivs"] == "0"


@pytest.mark.skipif(os.geteuid() != 0 or _status_mask("CapPrm") == 0, reason="needs capabilities to drop")
def test_a_thread_started_before_the_drop_is_refused() -> None:
    # Capabilities are per thread: a thread started earlier would keep them all.
    result = _child("thread", "sys_ptrace")
    assert "thread" in str(result.get("error")), result
