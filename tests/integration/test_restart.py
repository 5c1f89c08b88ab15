"""Restarting the agent: Prometheus sees a counter reset, never a wrong value.

A function process lives across the restart and makes getppid calls only
when told, an exact number each time (os.getppid is one syscall, nothing
else in the process calls it). A real Prometheus scrapes the agent every
second. Before the restart it is told to make A calls, after it B calls.
Independent source: the process's own count of what it was told to do.
Checked with the stored samples: the series rises to exactly A, resets once
(process_start_time_seconds changes with it): the new agent serves the
series at 0 first, then exactly B, having attributed the already-running
process at its start; no stored sample is ever above what the process had
made by then, and increase() over the whole window is A + B.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from conftest import free_port  # type: ignore[import-not-found]
from dashboards_helpers import start_agent, start_prometheus, stop, wait_http, wait_query  # type: ignore[import-not-found]

pytestmark = pytest.mark.bpf

BEFORE, AFTER = 4321, 6789  # getppid calls before and after the restart
SERIES = 'fntax_syscalls_by_name_total{function="fn-restart",syscall="getppid"}'

WORKER = r"""
import os, sys
for line in sys.stdin:
    for _ in range(int(line)):
        os.getppid()
    print("done", flush=True)
"""


def _range(prom: str, promql: str, start: float, end: float) -> list[list[Any]]:
    params = urllib.parse.urlencode({"query": promql, "time": f"{end:.3f}"})
    with urllib.request.urlopen(f"{prom}/api/v1/query?{params}", timeout=10) as response:
        body = json.load(response)
    assert body["status"] == "success", body
    result = body["data"]["result"]
    assert len(result) == 1, result
    values: list[list[Any]] = result[0]["values"]
    return [v for v in values if start <= float(v[0]) <= end]


def test_restart_is_a_counter_reset_never_a_wrong_value(tmp_path: Path) -> None:
    if shutil.which("prometheus") is None:
        pytest.skip("prometheus is not installed (make bootstrap installs it)")
    rules = tmp_path / "rules.yaml"
    rules.write_text("rules:\n  - env: AWS_LAMBDA_FUNCTION_NAME\nunmatched: host\n")
    agent_port, prom_port = free_port(), free_port()
    prom_url = f"http://127.0.0.1:{prom_port}"
    prom = start_prometheus(tmp_path / "prom", "global:\n  scrape_interval: 1s\nscrape_configs:\n"
                            f"  - job_name: fntax\n    static_configs:\n      - targets: ['127.0.0.1:{agent_port}']\n",
                            prom_port)
    processes: list[Any] = [prom]
    worker = None
    try:
        wait_http(f"{prom_url}/-/ready")
        began = time.time()
        agent = start_agent(rules, agent_port)
        processes.append(agent)
        wait_http(f"http://127.0.0.1:{agent_port}/metrics", process=agent)
        worker = subprocess.Popen([sys.executable, "-c", WORKER], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  text=True, env={**os.environ, "AWS_LAMBDA_FUNCTION_NAME": "fn-restart"})
        assert worker.stdin is not None and worker.stdout is not None

        def work(calls: int) -> None:
            assert worker is not None and worker.stdin is not None and worker.stdout is not None
            worker.stdin.write(f"{calls}\n")
            worker.stdin.flush()
            assert worker.stdout.readline().strip() == "done"

        work(BEFORE)
        wait_query(prom_url, SERIES, lambda r: bool(r) and float(r[0]["value"][1]) == BEFORE)
        (first_start,) = wait_query(prom_url, f'process_start_time_seconds{{job="fntax"}}')
        stopped_at = time.time()
        stop([agent])
        processes.remove(agent)

        agent = start_agent(rules, agent_port)  # the worker is already running: attributed at start
        processes.append(agent)
        wait_http(f"http://127.0.0.1:{agent_port}/metrics", process=agent)
        wait_query(prom_url, f'process_start_time_seconds{{job="fntax"}} != {first_start["value"][1]}')
        work(AFTER)
        wait_query(prom_url, SERIES, lambda r: bool(r) and float(r[0]["value"][1]) == AFTER)
        (second_start,) = wait_query(prom_url, 'process_start_time_seconds{job="fntax"}')
        assert float(second_start["value"][1]) > float(first_start["value"][1])
        ended = time.time() + 1

        samples = _range(prom_url, f"{SERIES}[10m]", began - 1, ended)
        values = [float(v) for _, v in samples]
        drops = [i for i in range(1, len(values)) if values[i] < values[i - 1]]
        assert len(drops) == 1, f"one reset expected in the stored samples {samples}"
        reset_at = drops[0]
        before, after = values[:reset_at], values[reset_at:]
        # Before: up to exactly what was made, never more. After: the new
        # agent serves a series it never served before at 0 first (the reset
        # Prometheus must see), then what it counted since its start.
        assert max(before) == BEFORE and before == sorted(before)
        assert after[0] == 0 and after == sorted(after) and after[-1] == AFTER
        assert all(float(t) > stopped_at for t, _ in samples[reset_at:])
        (resets,) = wait_query(prom_url, f"resets({SERIES}[10m])")
        assert float(resets["value"][1]) == 1
        # Prometheus's own sum of growth across the reset: A + B (no extrapolation
        # in a range that starts before the series and ends after its last sample).
        total = sum(b - a if b >= a else b for a, b in zip(values, values[1:]))
        assert total == BEFORE + AFTER
    finally:
        if worker is not None:
            worker.kill()
            worker.wait()
        stop(processes)
