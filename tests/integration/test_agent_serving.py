"""Serving: TLS, client certificates, basic auth, bad config, busy port, signals."""

from __future__ import annotations

import json
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from base64 import b64encode
from pathlib import Path
from typing import Iterator

import bcrypt
import pytest

from conftest import FNTAX, free_port, programs_held_by, wait_programs_gone  # type: ignore[import-not-found]

pytestmark = pytest.mark.bpf


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("pki")
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=fntax-test-ca",
             "-keyout", str(d / "ca.key"), "-out", str(d / "ca.crt"))
    for name in ("server", "client"):
        _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}", "-keyout", str(d / f"{name}.key"),
                 "-out", str(d / f"{name}.csr"))
        ext = d / f"{name}.ext"
        ext.write_text("subjectAltName=IP:127.0.0.1\n" if name == "server" else "extendedKeyUsage=clientAuth\n")
        _openssl("x509", "-req", "-in", str(d / f"{name}.csr"), "-CA", str(d / "ca.crt"), "-CAkey", str(d / "ca.key"),
                 "-CAcreateserial", "-days", "2", "-out", str(d / f"{name}.crt"), "-extfile", str(ext))
    return d


def _start(port: int, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen([FNTAX, "agent", "-q", "--listen", f"127.0.0.1:{port}", *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_port(port: int, proc: subprocess.Popen[str], seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        # The agent binds its port before loading the probes and serves once
        # they are loaded: a connection is accepted early, answered only then
        # (with a page, or a TLS alert, or a close: any answer will do).
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                sock.settimeout(2)
                try:
                    sock.sendall(b"GET / HTTP/1.0\r\n\r\n")
                    sock.recv(1)
                    return
                except ConnectionError:
                    return  # answered with a reset (TLS refusing plain text)
                except socket.timeout:
                    pass
        time.sleep(0.3)
    raise AssertionError("agent never listened")


@pytest.fixture
def secured(pki: Path, tmp_path: Path) -> Iterator[tuple[int, Path]]:
    web = tmp_path / "web.yml"
    hashed = bcrypt.hashpw(b"s3cret", bcrypt.gensalt(rounds=4)).decode()
    web.write_text(f"tls_server_config:\n  cert_file: {pki / 'server.crt'}\n  key_file: {pki / 'server.key'}\n"
                   f"  client_ca_file: {pki / 'ca.crt'}\n  client_auth_type: RequireAndVerifyClientCert\n"
                   f"basic_auth_users:\n  prom: '{hashed}'\n")
    port = free_port()
    proc = _start(port, "--web-config", str(web))
    try:
        _wait_port(port, proc)
        yield port, pki
    finally:
        proc.terminate()
        proc.wait(timeout=60)


def _get(url: str, context: ssl.SSLContext | None, auth: str | None) -> int:
    request = urllib.request.Request(url)
    if auth:
        request.add_header("Authorization", "Basic " + b64encode(auth.encode()).decode())
    try:
        with urllib.request.urlopen(request, context=context, timeout=10) as response:
            return int(response.status)
    except urllib.error.HTTPError as err:
        return int(err.code)


def test_tls_client_certs_and_basic_auth(secured: tuple[int, Path]) -> None:
    port, pki = secured
    url = f"https://127.0.0.1:{port}/metrics"
    with_cert = ssl.create_default_context(cafile=str(pki / "ca.crt"))
    with_cert.load_cert_chain(str(pki / "client.crt"), str(pki / "client.key"))
    assert _get(url, with_cert, "prom:s3cret") == 200
    assert _get(url, with_cert, "prom:wrong") == 401
    assert _get(url, with_cert, None) == 401
    # No client certificate: the handshake is refused.
    without_cert = ssl.create_default_context(cafile=str(pki / "ca.crt"))
    with pytest.raises((ssl.SSLError, urllib.error.URLError, ConnectionError)):
        urllib.request.urlopen(url, context=without_cert, timeout=10).read()
    # Plaintext on the TLS port is refused.
    with pytest.raises((urllib.error.URLError, ConnectionError, OSError)):
        urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read()


@pytest.mark.parametrize("setup, needle", [
    ("rules", "rules.yaml: rules[0]: bad regular expression"),
    ("web", "cannot read web config"),
    ("port", "address already in use"),
])
def test_bad_config_unreadable_web_config_busy_port(tmp_path: Path, setup: str, needle: str) -> None:
    port = free_port()
    args: list[str] = []
    blocker = None
    if setup == "rules":
        bad = tmp_path / "rules.yaml"
        bad.write_text("rules:\n  - cmdline: '('\n")
        args = ["--config", str(bad)]
    elif setup == "web":
        args = ["--web-config", str(tmp_path / "missing.yml")]
    else:
        blocker = socket.socket()
        blocker.bind(("127.0.0.1", port))
        blocker.listen()
    try:
        # Not quiet for the busy port: its one line comes before any progress
        # (the port is bound before calibration and the probes load).
        quiet = [] if setup == "port" else ["-q"]
        result = subprocess.run([FNTAX, "agent", *quiet, "--listen", f"127.0.0.1:{port}", *args],
                                capture_output=True, text=True, timeout=120)
    finally:
        if blocker:
            blocker.close()
    assert result.returncode not in (0, 1)
    assert result.stderr.count("\n") == 1 and needle in result.stderr, result.stderr


def test_sigterm_detaches_and_sighup_reloads(tmp_path: Path) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text("rules:\n  - env: FN_A\n")
    port = free_port()
    proc = _start(port, "--config", str(rules), "--interval", "0.5")
    try:
        _wait_port(port, proc)
        held = programs_held_by(proc.pid)
        assert held
        rules.write_text("rules:\n  - env: FN_B\n")
        proc.send_signal(1)  # SIGHUP
        time.sleep(2)
        # A process that outlives the agent's event poll (100 ms): see the README's
        # note on processes that receive their function's variable at exec.
        subprocess.run(["sh", "-c", "sleep 0.5"], env={"FN_B": "after-reload", "PATH": "/usr/bin:/bin"}, check=True)
        deadline = time.monotonic() + 20
        body = ""
        while time.monotonic() < deadline and 'function="after-reload"' not in body:
            time.sleep(0.5)
            body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
        assert 'function="after-reload"' in body
    except BaseException:
        proc.kill()
        proc.wait(timeout=60)
        raise
    proc.terminate()
    _out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0 and "Traceback" not in err
    assert wait_programs_gone(held), "BPF programs left loaded"
