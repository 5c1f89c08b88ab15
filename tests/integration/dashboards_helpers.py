"""Helpers for the dashboard and fleet tests: a real agent, real Prometheus servers, paced workloads.

Everything listens on loopback. Processes are stopped by the handle that
started them, never by name.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any, Sequence

from conftest import FNTAX, WORKLOADS  # type: ignore[import-not-found]

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
RULES_DIR = ROOT / "deploy" / "prometheus" / "rules"


def wait_http(url: str, seconds: float = 60, process: subprocess.Popen[Any] | None = None) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            err = process.stderr.read() if process.stderr is not None else ""
            raise AssertionError(f"{url}: the process serving it exited ({process.returncode}): {err}")
        try:
            urllib.request.urlopen(url, timeout=2).read()
            return
        except OSError:
            time.sleep(0.2)
    raise AssertionError(f"{url} never answered")


def start_agent(rules: Path, port: int) -> subprocess.Popen[str]:
    return subprocess.Popen([FNTAX, "agent", "-q", "--listen", f"127.0.0.1:{port}", "--config", str(rules),
                             "--interval", "0.5"], stderr=subprocess.PIPE, text=True)


def start_prometheus(directory: Path, config: str, port: int, *extra: str) -> subprocess.Popen[bytes]:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "prometheus.yml").write_text(config)
    return subprocess.Popen(["prometheus", f"--config.file={directory / 'prometheus.yml'}",
                             f"--storage.tsdb.path={directory / 'tsdb'}",
                             f"--web.listen-address=127.0.0.1:{port}", *extra],
                            stdout=subprocess.DEVNULL, stderr=open(directory / "prometheus.log", "wb"))


def stop(processes: Sequence[subprocess.Popen[Any]]) -> None:
    for proc in processes:
        if proc.poll() is None:
            proc.terminate()
    for proc in processes:
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def rule_files_yaml(*names: str) -> str:
    return "rule_files:\n" + "".join(f"  - {RULES_DIR / name}\n" for name in names)


def compile_accounting(directory: Path) -> str:
    binary = directory / "accounting"
    subprocess.run(["gcc", "-O2", "-pthread", "-o", str(binary), str(WORKLOADS / "accounting.c")], check=True)
    return str(binary)


class Paced(threading.Thread):
    """Run a command again and again (each run a fresh process, a cold start) until stopped.

    `{out}` in the command becomes a fresh output path for each run; the runs'
    outputs are kept so a test can compare with the workload's own figures.
    """

    def __init__(self, command: Sequence[str], env: dict[str, str], directory: Path, pause: float = 0.3,
                 runs: int | None = None) -> None:
        super().__init__(daemon=True)
        self.command, self.env, self.directory, self.pause, self.max_runs = list(command), env, directory, pause, runs
        self.halt = threading.Event()
        self.outputs: list[Path] = []
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            while not self.halt.is_set() and (self.max_runs is None or len(self.outputs) < self.max_runs):
                out = self.directory / f"run-{time.monotonic_ns()}.json"
                subprocess.run([str(out) if part == "{out}" else part for part in self.command],
                               env={**os.environ, **self.env}, check=True, timeout=120,
                               stdout=subprocess.DEVNULL)
                self.outputs.append(out)
                self.halt.wait(self.pause)
        except BaseException as err:  # reported by finish()
            self.error = err

    def finish(self) -> list[dict[str, Any]]:
        self.halt.set()
        self.join(timeout=120)
        if self.error is not None:
            raise self.error
        return [json.loads(path.read_text()) for path in self.outputs if path.exists()]


def query(prom: str, promql: str, at: float | None = None) -> list[dict[str, Any]]:
    params = {"query": promql}
    if at is not None:
        params["time"] = f"{at:.3f}"
    with urllib.request.urlopen(f"{prom}/api/v1/query?" + urllib.parse.urlencode(params), timeout=10) as response:
        body = json.load(response)
    assert body["status"] == "success", body
    result: list[dict[str, Any]] = body["data"]["result"]
    return result


def wait_query(prom: str, promql: str, ok: Any = bool, seconds: float = 30) -> list[dict[str, Any]]:
    """The query's result once ok(result) holds (scrapes, rule evaluations and remote writes catch up)."""
    deadline = time.monotonic() + seconds
    result: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        result = query(prom, promql)
        if ok(result):
            return result
        time.sleep(0.5)
    return result


def exposition_names(body: str) -> set[str]:
    """Sample names in a text exposition."""
    names = set()
    for line in body.splitlines():
        if line and not line.startswith("#"):
            names.add(line.split("{", 1)[0].split(" ", 1)[0])
    return names


def have_kvm() -> bool:
    return os.access("/dev/kvm", os.R_OK | os.W_OK) and shutil.which("qemu-system-x86_64") is not None


def start_vm(name: str) -> subprocess.Popen[bytes]:
    """A real KVM guest: QEMU with no disk runs its firmware (SeaBIOS), which looks for a boot device."""
    return subprocess.Popen(["qemu-system-x86_64", "-name", name, "-machine", "accel=kvm", "-nodefaults",
                             "-display", "none", "-m", "32", "-no-reboot"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
