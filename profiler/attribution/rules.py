"""Which function does a process belong to? Ordered rules, decided once per process.

A process is identified by (pid, start time), so a reused pid is never charged
to the previous owner's function. Rules come from a YAML file (or the
embedded default) and are tried in order:

    rules:
      - env: AWS_LAMBDA_FUNCTION_NAME          # the variable's value names the function
      - cgroup: '/firecracker/(?P<function>[^/]+)'   # a named group picks the label
        kind: vm
      - cmdline: 'python3 .*handler_(?P<function>\\w+)\\.py'
      - vm_id: '^fn-(?P<function>[a-z0-9-]+)$'  # a VM's id (profiler/attribution/vm.py) names it
      - vm_monitor: true                        # firecracker, qemu-system-*, cloud-hypervisor, crosvm
    unmatched: host                             # or: comm (group by command name)

Any rule may say how its function's invocations show as processes, so the
agent can count them (fntax_invocations_total); without it there is no series:

      - env: FN_NAME
        invocations: process    # each process started into the function from outside it
      - cmdline: 'node .*runtime.js (?P<function>\\w+)'
        invocations: child      # each child of such a process (a runtime's per-event worker)

Children inherit their parent's function (the agent decides at fork/exec).
Label values come only from what a rule names: never a whole command line or
an environment value the rules did not ask for.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import yaml

# ProcessFacts and read_facts live in facts.py; re-exported so importers of
# profiler.attribution.rules keep working.
from profiler.attribution.facts import ProcessFacts as ProcessFacts
from profiler.attribution.facts import read_facts as read_facts
from profiler.attribution.vm import ProcessFacts as VmFacts
from profiler.attribution.vm import VmIdentity, identify_vm
from profiler.errors import ConfigError
from profiler.files import load_yaml

HOST = "host"
MAX_LABEL = 64
_LABEL_SAFE = re.compile(r"[^A-Za-z0-9_.:/-]")
VM_MONITORS = re.compile(r"^(firecracker|qemu-system-[\w-]+|cloud-hypervisor|crosvm)$")


class WorkloadKind(str, enum.Enum):
    PROCESS = "process"
    CONTAINER = "container"
    VM = "vm"


@dataclass(frozen=True)
class Attribution:
    function: str
    kind: WorkloadKind
    memory_mb: int | None = None
    # How an invocation shows (INVOCATION_SHAPES), or None: the rule cannot tell.
    invocations: str | None = None


# A process started into a function from outside it (its parent is another
# function's) is at depth 0, its children at 1. "process": each depth-0
# process is one invocation (a platform that starts one process per event);
# "child": each depth-1 process (a runtime that forks a worker per event).
INVOCATION_SHAPES = {"process": 0, "child": 1}


@dataclass(frozen=True)
class Rule:
    env: str | None = None
    cgroup: re.Pattern[str] | None = None
    cmdline: re.Pattern[str] | None = None
    vm_monitor: bool = False
    vm_id: re.Pattern[str] | None = None
    kind: WorkloadKind = WorkloadKind.PROCESS
    memory_mb: int | None = None
    invocations: str | None = None

    def match(self, facts: ProcessFacts) -> Attribution | None:
        if self.env is not None:
            value = facts.environ.get(self.env)
            return Attribution(_label(value), self.kind, self.memory_mb, self.invocations) if value else None
        if self.cgroup is not None:
            return self._regex(self.cgroup, facts.cgroup)
        if self.cmdline is not None:
            return self._regex(self.cmdline, facts.cmdline)
        if self.vm_id is not None:
            vm = _vm_identity(facts)
            if vm is None or vm.vm_id is None:
                return None
            return self._regex(self.vm_id, vm.vm_id, WorkloadKind.VM)
        if self.vm_monitor:
            vm = _vm_identity(facts)
            if vm is None:
                return None
            # The VM's id (firecracker --id, the jailer's cgroup, qemu -name, ...).
            name = vm.vm_id or f"{vm.monitor.value}-unknown"
            return Attribution(_label(name), WorkloadKind.VM, self.memory_mb, self.invocations)
        return None

    def _regex(self, pattern: re.Pattern[str], text: str,
               kind: WorkloadKind | None = None) -> Attribution | None:
        found = pattern.search(text)
        if not found:
            return None
        name = found.groupdict().get("function") or found.group(0)
        return Attribution(_label(name), kind or self.kind, self.memory_mb, self.invocations)


def _vm_identity(facts: ProcessFacts) -> VmIdentity | None:
    """The VM a process monitors (profiler.attribution.vm), from its argv and cgroups."""
    argv = facts.argv or tuple(facts.cmdline.split())
    return identify_vm(VmFacts(facts.comm, argv, tuple(f"0::{path}" for path in facts.cgroup.splitlines())))


@dataclass(frozen=True)
class Rules:
    rules: tuple[Rule, ...]
    unmatched: str = "host"  # "host" | "comm"

    def exec_env_name(self) -> str | None:
        """The first env rule's variable: the probe reads it from execve's envp."""
        return next((rule.env for rule in self.rules if rule.env is not None), None)

    def decide_by_env(self, environ: Mapping[str, str]) -> Attribution | None:
        """The decision when the first rule reads an environment variable that
        `environ` sets: no later rule can overrule it, so /proc need not be
        read (the agent hears envp at exec). None: the other facts are needed."""
        first = self.rules[0] if self.rules else None
        if first is None or first.env is None or not environ.get(first.env):
            return None
        return first.match(ProcessFacts(0, 0, 0, "", "", "", dict(environ)))

    def attribute(self, facts: ProcessFacts) -> Attribution:
        for rule in self.rules:
            found = rule.match(facts)
            if found is not None:
                return found
        if self.unmatched == "comm":
            return Attribution(_label(facts.comm) or HOST, WorkloadKind.PROCESS)
        return Attribution(HOST, WorkloadKind.PROCESS)


def _label(value: str) -> str:
    """Bounded, printable label values."""
    return _LABEL_SAFE.sub("_", value.strip())[:MAX_LABEL]


DEFAULT_RULES_YAML = r"""
rules:
  - env: AWS_LAMBDA_FUNCTION_NAME
  - cgroup: '/firecracker/(?P<function>[^/]+)'
    kind: vm
  - cgroup: 'kubepods.*/(?:cri-containerd-|docker-|crio-)?(?P<function>[0-9a-f]{12})[0-9a-f]*'
    kind: container
  - cgroup: '/docker/(?P<function>[0-9a-f]{12})'
    kind: container
  - vm_monitor: true
unmatched: host
"""


def parse_rules(data: Any, source: str) -> Rules:
    if not isinstance(data, Mapping):
        raise ConfigError(f"{source}: expected a mapping with 'rules'")
    raw_rules = data.get("rules", [])
    if not isinstance(raw_rules, Sequence) or isinstance(raw_rules, str):
        raise ConfigError(f"{source}: 'rules' must be a list")
    rules = [_parse_rule(raw, f"{source}: rules[{i}]") for i, raw in enumerate(raw_rules)]
    unmatched = data.get("unmatched", "host")
    if not isinstance(unmatched, str) or unmatched not in ("host", "comm"):
        raise ConfigError(f"{source}: 'unmatched' must be host or comm, got {_short(unmatched)}")
    unknown = _unknown_keys(data, {"rules", "unmatched"})
    if unknown:
        raise ConfigError(f"{source}: unknown key {unknown}")
    return Rules(tuple(rules), unmatched)


_MATCHERS = ("env", "cgroup", "cmdline", "vm_monitor", "vm_id")


def _parse_rule(raw: Any, where: str) -> Rule:
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{where}: expected a mapping")
    unknown = _unknown_keys(raw, {*_MATCHERS, "kind", "memory_mb", "invocations"})
    if unknown:
        raise ConfigError(f"{where}: unknown key {unknown}")
    matchers = [key for key in _MATCHERS if key in raw]
    if len(matchers) != 1:
        raise ConfigError(f"{where}: needs exactly one of {', '.join(_MATCHERS)}")
    kind_name = raw.get("kind", "process")
    if not isinstance(kind_name, str) or kind_name not in {k.value for k in WorkloadKind}:
        raise ConfigError(f"{where}: kind must be process, container or vm")
    kind = WorkloadKind(kind_name)
    memory = raw.get("memory_mb")
    if memory is not None and (isinstance(memory, bool) or not isinstance(memory, int) or memory <= 0):
        raise ConfigError(f"{where}: memory_mb must be a positive integer")
    invocations = raw.get("invocations")
    if invocations is not None and (not isinstance(invocations, str) or invocations not in INVOCATION_SHAPES):
        raise ConfigError(f"{where}: invocations must be {' or '.join(INVOCATION_SHAPES)}, got {_short(invocations)}")
    key = matchers[0]
    value = raw[key]
    if key == "env":
        if not isinstance(value, str) or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,63}", value):
            raise ConfigError(f"{where}: env must name a variable (letters, digits, _)")
        return Rule(env=value, kind=kind, memory_mb=memory, invocations=invocations)
    if key == "vm_monitor":
        return Rule(vm_monitor=bool(value), kind=WorkloadKind.VM, memory_mb=memory, invocations=invocations)
    if not isinstance(value, str):
        raise ConfigError(f"{where}: {key} must be a regular expression string")
    try:
        pattern = re.compile(value)
    except (re.error, RecursionError, OverflowError, ValueError) as err:
        raise ConfigError(f"{where}: bad regular expression {_short(value)}: {_one_line(err)}") from err
    if key == "cgroup":
        return Rule(cgroup=pattern, kind=kind, memory_mb=memory, invocations=invocations)
    if key == "vm_id":
        return Rule(vm_id=pattern, kind=WorkloadKind.VM, memory_mb=memory, invocations=invocations)
    return Rule(cmdline=pattern, kind=kind, memory_mb=memory, invocations=invocations)


def load_rules(path: str | Path | None) -> Rules:
    """Rules from a YAML (or JSON) file, or the embedded default."""
    if path is None:
        return parse_rules(yaml.safe_load(DEFAULT_RULES_YAML), "default rules")
    path = Path(path)
    return parse_rules(load_yaml(path, "rules file", unreadable=ConfigError), str(path))


def _unknown_keys(data: Mapping[Any, Any], known: set[str]) -> str | None:
    """The first key not in `known`, quoted (YAML keys may be numbers, lists or null)."""
    unknown = sorted(repr(key) for key in data if not isinstance(key, str) or key not in known)
    return _short(unknown[0], 60) if unknown else None


def _short(value: Any, limit: int = 60) -> str:
    text = value if isinstance(value, str) and value.startswith("'") else repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _one_line(err: BaseException) -> str:
    return (str(err).splitlines() or [type(err).__name__])[0]
