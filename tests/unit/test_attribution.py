"""Attribution rules: ordered, bounded labels, clear config errors (no kernel)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from profiler.attribution.rules import HOST, ProcessFacts, WorkloadKind, load_rules, parse_rules, read_facts
from profiler.errors import ConfigError


def _facts(comm: str = "python3", cmdline: str = "python3 app.py", cgroup: str = "/user.slice",
           environ: dict[str, str] | None = None) -> ProcessFacts:
    return ProcessFacts(pid=42, start_time=1000, tgid=42, comm=comm, cmdline=cmdline, cgroup=cgroup,
                        environ=environ or {})


def test_default_rules() -> None:
    rules = load_rules(None)
    assert rules.attribute(_facts(environ={"AWS_LAMBDA_FUNCTION_NAME": "resize", "SECRET": "x"})).function == "resize"
    vm = rules.attribute(_facts(cgroup="/firecracker/vm-17/leaf"))
    assert (vm.function, vm.kind) == ("vm-17", WorkloadKind.VM)
    ctr = rules.attribute(_facts(cgroup="/kubepods/besteffort/pod1/cri-containerd-0123456789abcdef0123"))
    assert (ctr.function, ctr.kind) == ("0123456789ab", WorkloadKind.CONTAINER)
    qemu = rules.attribute(_facts(comm="qemu-system-x86", cmdline="qemu-system-x86_64 -name guest=fn-a -m 128"))
    assert (qemu.function, qemu.kind) == ("fn-a", WorkloadKind.VM)
    assert rules.attribute(_facts()).function == HOST


def test_order_matters_and_cmdline_named_group() -> None:
    rules = parse_rules({"rules": [{"cmdline": r"handler_(?P<function>\w+)\.py", "memory_mb": 256},
                                   {"env": "AWS_LAMBDA_FUNCTION_NAME"}]}, "t")
    both = _facts(cmdline="python3 /srv/handler_thumbs.py --secret=abc",
                  environ={"AWS_LAMBDA_FUNCTION_NAME": "other"})
    found = rules.attribute(both)
    assert (found.function, found.memory_mb) == ("thumbs", 256)


def test_labels_are_bounded_and_never_whole_command_lines() -> None:
    rules = parse_rules({"rules": [{"env": "FN"}], "unmatched": "comm"}, "t")
    long_name = "x" * 500 + " $(rm -rf)"
    label = rules.attribute(_facts(environ={"FN": long_name})).function
    assert len(label) <= 64 and " " not in label
    assert rules.attribute(_facts(comm="nginx", cmdline="nginx -g daemon off; --password=hunter2")).function == "nginx"


@pytest.mark.parametrize("data, message", [
    ({"rules": "x"}, "'rules' must be a list"),
    ({"rules": [{"env": "A", "cmdline": "b"}]}, r"rules\[0\]: needs exactly one of"),
    ({"rules": [{"cmdline": "("}]}, r"rules\[0\]: bad regular expression"),
    ({"rules": [{"cgroup": "x", "kind": "pod"}]}, "kind must be process, container or vm"),
    ({"rules": [{"env": "A", "memory_mb": -5}]}, "memory_mb must be a positive integer"),
    ({"rules": [], "unmatched": "everything"}, "'unmatched' must be host or comm"),
    ({"rules": [{"envv": "A"}]}, "unknown key 'envv'"),
])
def test_bad_rules_are_named(data: object, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_rules(data, "rules.yaml")


def test_bad_yaml_file(tmp_path: Path) -> None:
    bad = tmp_path / "rules.yaml"
    bad.write_text("rules: [\n  - env: A\n  bad")
    with pytest.raises(ConfigError, match="rules.yaml: not valid YAML"):
        load_rules(bad)
    with pytest.raises(ConfigError, match="cannot read"):
        load_rules(tmp_path / "missing.yaml")


def test_read_facts_of_self() -> None:
    facts = read_facts(os.getpid())
    assert facts is not None
    assert facts.pid == os.getpid() and facts.start_time > 0
    assert "python" in facts.cmdline
    assert read_facts(999_999_999) is None
