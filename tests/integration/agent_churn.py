"""Shared by the reliability tests: a real agent, its /metrics parsed, and process churn.

The churn generators spawn short processes of tests/workloads/accounting.c
(`syscalls N`: exactly N getppid calls, then exit), each named by
AWS_LAMBDA_FUNCTION_NAME, and report how many they started and how many
exited 0: the independent count the agent's figures are checked against.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

from prometheus_client.parser import text_string_to_metric_families

from conftest import FNTAX, WORKLOADS, free_port  # type: ignore[import-not-found]

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def build_accounting(directory: Path) -> Path:
    binary = directory / "accounting"
    if not binary.exists():
        subprocess.run(["gcc", "-O2", "-pthread", "-o", str(binary), str(WORKLOADS / "accounting.c")], check=True)
    return binary


@dataclass
class RunningAgent:
    proc: subprocess.Popen[str]
    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/metrics"

    def scrape(self) -> Samples:
        with urllib.request.urlopen(self.url, timeout=10) as response:
            text = response.read().decode()
        samples: Samples = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                samples[(sample.name, frozenset(sample.labels.items()))] = float(sample.value)
        return samples


@contextmanager
def running_agent(*args: str, env: dict[str, str] | None = None, seconds: float = 120) -> Iterator[RunningAgent]:
    port = free_port()
    proc = subprocess.Popen([FNTAX, "agent", "-q", "--listen", f"127.0.0.1:{port}", "--no-bpf-stats", *args],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, **(env or {})})
    agent = RunningAgent(proc, port)
    try:
        deadline = time.monotonic() + seconds
        while True:
            if proc.poll() is not None:
                raise AssertionError(f"agent exited {proc.returncode}: {proc.stderr.read() if proc.stderr else ''}")
            try:
                agent.scrape()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise AssertionError("agent never served /metrics") from None
                time.sleep(0.1)
        yield agent
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def total(samples: Samples, name: str, **labels: str) -> float:
    """Sum of a family's samples over every function (host and _exited included)."""
    want = set(labels.items())
    return sum(value for (sample, found), value in samples.items() if sample == name and want <= found)


def by_function(samples: Samples, name: str, **labels: str) -> dict[str, float]:
    want = set(labels.items())
    out: dict[str, float] = {}
    for (sample, found), value in samples.items():
        if sample == name and want <= found:
            function = dict(found)["function"]
            out[function] = out.get(function, 0.0) + value
    return out


def getppid_total(samples: Samples) -> float:
    return total(samples, "fntax_syscalls_by_name_total", syscall="getppid")


def settled(agent: RunningAgent, read: Callable[[Samples], float], seconds: float = 60,
            quiet_for: float = 2.0) -> tuple[float, Samples]:
    """A figure once it stopped changing for `quiet_for` seconds (every exited process folded)."""
    deadline = time.monotonic() + seconds
    last = None
    since = time.monotonic()
    while True:
        samples = agent.scrape()
        value = read(samples)
        if value != last:
            last, since = value, time.monotonic()
        elif time.monotonic() - since >= quiet_for:
            return value, samples
        if time.monotonic() > deadline:
            return value, samples
        time.sleep(0.25)


# One generator: spawns `count` processes (or until `seconds` pass) one after
# another, rotating over `functions` names; prints JSON {started, ok, per_function}.
GENERATOR = r'''
import json, os, sys, time
binary, calls, functions, count, seconds = sys.argv[1], sys.argv[2], sys.argv[3].split(","), int(sys.argv[4]), float(sys.argv[5])
rate = float(sys.argv[6])  # processes a second, 0: as fast as possible
base = {k: v for k, v in os.environ.items() if k != "AWS_LAMBDA_FUNCTION_NAME"}
started = ok = 0
per_function = {}
pids = []
began = time.monotonic()
deadline = began + seconds
i = 0
while (count <= 0 or started < count) and time.monotonic() < deadline:
    if rate > 0:
        time.sleep(max(0.0, began + started / rate - time.monotonic()))
    name = functions[i % len(functions)]
    i += 1
    pid = os.posix_spawn(binary, [binary, "/dev/null", "syscalls", calls],
                         {"AWS_LAMBDA_FUNCTION_NAME": name, **base})
    started += 1
    pids.append(pid)
    _, status = os.waitpid(pid, 0)
    if os.waitstatus_to_exitcode(status) == 0:
        ok += 1
        per_function[name] = per_function.get(name, 0) + 1
print(json.dumps({"started": started, "ok": ok, "per_function": per_function, "pids": pids}))
'''


@dataclass
class ChurnResult:
    started: int
    ok: int
    per_function: dict[str, int]
    seconds: float
    pids: list[int]

    @property
    def reused_pids(self) -> int:
        """Spawns that got a pid an earlier spawn of this churn already had."""
        return len(self.pids) - len(set(self.pids))


def churn(binary: Path, calls: int, generators: list[list[str]], count: int = 0,
          seconds: float = 3600, rate: float = 0) -> ChurnResult:
    """Run one generator per function list at once (each at `rate` processes a second, 0: flat out)."""
    began = time.monotonic()
    procs = [subprocess.Popen([sys.executable, "-c", GENERATOR, str(binary), str(calls), ",".join(names),
                               str(count), str(seconds), str(rate)], stdout=subprocess.PIPE, text=True)
             for names in generators]
    started = ok = 0
    per_function: dict[str, int] = {}
    pids: list[int] = []
    for proc in procs:
        out, _ = proc.communicate(timeout=seconds + 120)
        assert proc.returncode == 0
        report = json.loads(out)
        started += report["started"]
        ok += report["ok"]
        pids += report["pids"]
        for name, n in report["per_function"].items():
            per_function[name] = per_function.get(name, 0) + n
    return ChurnResult(started, ok, per_function, time.monotonic() - began, pids)
