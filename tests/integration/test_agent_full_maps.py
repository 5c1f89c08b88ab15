"""The agent with maps smaller than the host's live processes: it keeps
running, counts every failed update, publishes fill against capacity and
says so once on stderr (rate-limited), never a traceback."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from conftest import FNTAX, free_port  # type: ignore[import-not-found]
from dashboards_helpers import wait_http  # type: ignore[import-not-found]

pytestmark = pytest.mark.bpf

CAPACITY = 8
LIVE = 24  # more live processes than entries, each making syscalls


def test_full_process_map_is_counted_published_and_warned_once() -> None:
    port = free_port()
    agent = subprocess.Popen([FNTAX, "agent", "--listen", f"127.0.0.1:{port}", "--no-bpf-stats",
                              "--interval", "0.5", "--max-processes", str(CAPACITY)],
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    busy = []
    try:
        wait_http(f"http://127.0.0.1:{port}/metrics", process=agent)
        busy = [subprocess.Popen([sys.executable, "-c", "import os, time\nwhile True:\n    os.getppid(); "
                                  "time.sleep(0.01)"]) for _ in range(LIVE)]
        deadline = time.monotonic() + 60
        samples: dict[tuple[str, str], float] = {}
        while time.monotonic() < deadline:
            body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
            samples = {(s.name, s.labels.get("map", "")): s.value
                       for family in text_string_to_metric_families(body) for s in family.samples}
            if samples.get(("fntax_map_update_failures_total", "procs"), 0) > 0:
                break
            time.sleep(0.5)
        assert samples.get(("fntax_map_update_failures_total", "procs"), 0) > 0
        assert samples[("fntax_map_capacity", "procs")] == CAPACITY
        assert 0 < samples[("fntax_map_entries", "procs")] <= CAPACITY
        time.sleep(2)  # more failures, more folds: still one warning (at most one a minute)
        assert agent.poll() is None
        # fntax doctor shows the running agent's fill and failures.
        doctor = subprocess.run([FNTAX, "doctor", "--json", "--agent", f"http://127.0.0.1:{port}/metrics"],
                                capture_output=True, text=True, timeout=300)
        check = json.loads(doctor.stdout)["checks"]["agent"]
        assert check["ok"] is False and "procs " in check["detail"] and f"/{CAPACITY} (" in check["detail"]
        assert "update failures 0" not in check["detail"]
    finally:
        for proc in busy:
            proc.kill()
            proc.wait()
        agent.send_signal(signal.SIGTERM)
        _out, err = agent.communicate(timeout=60)
    assert agent.returncode == 0 and "Traceback" not in err
    warnings = [line for line in err.splitlines() if "BPF map updates failed" in line]
    assert len(warnings) == 1, err
    assert "procs" in warnings[0] and "--max-processes" in warnings[0]
