"""The agent's /metrics server without the agent or a kernel: web config parsing,
basic auth, TLS and client certificates on a loopback port."""

from __future__ import annotations

import base64
import http.client
import shutil
import socket
import ssl
import subprocess
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import bcrypt
import pytest

from profiler.agent import webserver
from profiler.agent.webserver import WebConfig, load_web_config, metrics_app, parse_listen, serve, with_basic_auth
from profiler.errors import ConfigError, InputError

BODY = b"# HELP up Test.\n# TYPE up gauge\nup 1\n"
PASSWORD = "correct horse"
HASH = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=4)).decode()  # low cost: a test, not a secret


# ---- certificates (openssl CLI) ----

def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def _issue(name: str, ca: str, cwd: Path, extensions: str) -> None:
    _openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", f"{name}.key",
             "-out", f"{name}.csr", "-subj", f"/CN={name}", cwd=cwd)
    (cwd / f"{name}.ext").write_text(extensions)
    _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.crt", "-CAkey", f"{ca}.key", "-CAcreateserial",
             "-out", f"{name}.crt", "-days", "1", "-extfile", f"{name}.ext", cwd=cwd)


def _ca(name: str, cwd: Path) -> None:
    _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
             "-keyout", f"{name}.key", "-out", f"{name}.crt", "-days", "1", "-subj", f"/CN={name}", cwd=cwd)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command is not installed")
    cwd = tmp_path_factory.mktemp("pki")
    for ca in ("ca", "other-ca"):
        _ca(ca, cwd)
    _issue("server", "ca", cwd, "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n")
    _issue("other-server", "other-ca", cwd, "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n")
    _issue("client", "ca", cwd, "extendedKeyUsage=clientAuth\n")
    _issue("stranger", "other-ca", cwd, "extendedKeyUsage=clientAuth\n")
    return cwd


def _config(tmp_path: Path, text: str) -> WebConfig:
    path = tmp_path / "web.yml"
    path.write_text(text)
    return load_web_config(path)


# ---- parsing ----

def test_no_config_is_plain_http() -> None:
    config = load_web_config(None)
    assert not config.tls and not config.users


def test_good_config_resolves_files_beside_it(pki: Path) -> None:
    config = _config(pki, f"tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n"
                          f"  client_ca_file: {pki / 'ca.crt'}\nbasic_auth_users:\n  prometheus: '{HASH}'\n")
    assert config.tls
    assert config.cert_file == str(pki / "server.crt") and config.key_file == str(pki / "server.key")
    assert config.client_ca_file == str(pki / "ca.crt")
    assert config.client_auth_type == "RequireAndVerifyClientCert"  # the default once a CA is given
    assert config.users == {"prometheus": HASH.encode()}


@pytest.mark.parametrize("text, message", [
    ("tls_server_config:\n  cert_file: server.crt\n", "needs both cert_file and key_file"),
    ("tls_server_config:\n  cert_file: missing.crt\n  key_file: server.key\n", "cert_file: no such file"),
    ("tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n  client_auth_type: Sometimes\n",
     "client_auth_type 'Sometimes' is not one of"),
    ("tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n"
     "  client_auth_type: RequireAndVerifyClientCert\n", "needs client_ca_file"),
    ("tls_server_config:\n  client_ca_file: ca.crt\n", "need cert_file and key_file"),
    ("basic_auth_users:\n  prometheus: plaintext\n", "basic_auth_users.prometheus: not a bcrypt hash"),
    ("basic_auth_users: [prometheus]\n", "must be mappings"),
    ("tls_config: {}\n", "unknown web config key 'tls_config'"),
    ("- a list\n", "must be a mapping"),
    ("tls_server_config: {cert_file: [\n", "not valid YAML"),
])
def test_bad_configs_name_the_problem(pki: Path, tmp_path: Path, text: str, message: str) -> None:
    for name in ("server.crt", "server.key", "ca.crt"):
        shutil.copy(pki / name, tmp_path / name)
    with pytest.raises(ConfigError, match=message):
        _config(tmp_path, text)


def test_unreadable_and_binary_configs(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read web config"):
        load_web_config(tmp_path / "absent.yml")
    binary = tmp_path / "binary.yml"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(ConfigError, match="not text"):
        load_web_config(binary)


def test_unusable_certificate_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / "bad.crt").write_text("not a certificate\n")
    (tmp_path / "bad.key").write_text("not a key\n")
    config = _config(tmp_path, "tls_server_config:\n  cert_file: bad.crt\n  key_file: bad.key\n")
    with pytest.raises(ConfigError, match="TLS certificate or key unusable"):
        serve(lambda: BODY, f"127.0.0.1:{_free_port()}", config)


def test_parse_listen() -> None:
    assert parse_listen("127.0.0.1:9435") == ("127.0.0.1", 9435)
    assert parse_listen(":9435") == ("127.0.0.1", 9435)
    assert parse_listen("[::1]:9435") == ("::1", 9435)
    for bad in ("9435", "host:", "host:0", "host:65536", "host:http"):
        with pytest.raises(InputError):
            parse_listen(bad)


# ---- basic auth as WSGI ----

def _call(app: webserver.WSGIApp, path: str = "/metrics", auth: str | None = None) -> tuple[str, dict[str, str],
                                                                                           bytes]:
    seen: dict[str, Any] = {}

    def start_response(status: str, headers: list[tuple[str, str]]) -> None:
        seen["status"], seen["headers"] = status, dict(headers)

    environ: dict[str, Any] = {"PATH_INFO": path}
    if auth is not None:
        environ["HTTP_AUTHORIZATION"] = auth
    body = b"".join(app(environ, start_response))
    return seen["status"], seen["headers"], body


def _basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def test_basic_auth_accepts_only_the_right_password(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[bytes] = []
    real = bcrypt.checkpw

    def counting(password: bytes, hashed: bytes) -> bool:
        calls.append(password)
        return real(password, hashed)

    monkeypatch.setattr(bcrypt, "checkpw", counting)  # the module webserver calls through
    app = with_basic_auth(metrics_app(lambda: BODY), {"prometheus": HASH.encode()})
    assert _call(app, auth=_basic("prometheus", PASSWORD))[::2] == ("200 OK", BODY)
    assert _call(app, auth=_basic("prometheus", PASSWORD))[0] == "200 OK"
    assert len(calls) == 1  # a good answer is remembered
    for auth in (_basic("prometheus", "wrong"), _basic("prometheus", "wrong"), _basic("nobody", PASSWORD),
                 "Basic !!!not-base64", "Bearer token", None):
        status, headers, _body = _call(app, auth=auth)
        assert status == "401 Unauthorized", auth
        assert headers["WWW-Authenticate"] == 'Basic realm="fntax"'
    assert len(calls) == 3  # wrong passwords are checked every time, never cached


def test_metrics_app_paths() -> None:
    app = metrics_app(lambda: BODY)
    status, headers, body = _call(app, "/metrics")
    assert status == "200 OK" and body == BODY and headers["Content-Length"] == str(len(BODY))
    assert headers["Content-Type"].startswith("text/plain; version=")  # the installed client's text format
    assert _call(app, "/")[0] == "200 OK"
    assert _call(app, "/other")[0] == "404 Not Found"


# ---- serving on loopback ----

def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture
def start() -> Iterator[Callable[[WebConfig], int]]:
    servers: list[Any] = []

    def run(config: WebConfig) -> int:
        port = _free_port()
        server, _thread = serve(lambda: BODY, f"127.0.0.1:{port}", config)
        servers.append(server)
        return port

    yield run
    for server in servers:
        server.shutdown()
        server.server_close()


def _client_context(pki: Path, ca: str = "ca", cert: str | None = None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(pki / f"{ca}.crt"))
    if cert is not None:
        context.load_cert_chain(str(pki / f"{cert}.crt"), str(pki / f"{cert}.key"))
    return context


def _get(port: int, context: ssl.SSLContext | None = None, auth: str | None = None) -> tuple[int, bytes]:
    conn: http.client.HTTPConnection
    if context is None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    else:
        conn = http.client.HTTPSConnection("127.0.0.1", port, timeout=5, context=context)
    try:
        conn.request("GET", "/metrics", headers={"Authorization": auth} if auth else {})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def _tls_config(pki: Path, **extra: Any) -> WebConfig:
    return WebConfig(cert_file=str(pki / "server.crt"), key_file=str(pki / "server.key"), **extra)


def test_plain_http_with_basic_auth(start: Callable[[WebConfig], int]) -> None:
    port = start(WebConfig(users={"prometheus": HASH.encode()}))
    assert _get(port, auth=_basic("prometheus", PASSWORD)) == (200, BODY)
    assert _get(port, auth=_basic("prometheus", "wrong"))[0] == 401
    assert _get(port)[0] == 401


def test_tls_with_basic_auth(pki: Path, start: Callable[[WebConfig], int]) -> None:
    port = start(_tls_config(pki, users={"prometheus": HASH.encode()}))
    assert _get(port, _client_context(pki), _basic("prometheus", PASSWORD)) == (200, BODY)
    assert _get(port, _client_context(pki), _basic("prometheus", "wrong"))[0] == 401
    with pytest.raises((http.client.HTTPException, OSError)):
        _get(port, None, _basic("prometheus", PASSWORD))  # plaintext to a TLS socket


def test_client_certificate_required(pki: Path, start: Callable[[WebConfig], int]) -> None:
    port = start(_tls_config(pki, client_ca_file=str(pki / "ca.crt"),
                             client_auth_type="RequireAndVerifyClientCert"))
    assert _get(port, _client_context(pki, cert="client")) == (200, BODY)
    for context in (_client_context(pki), _client_context(pki, cert="stranger")):
        # TLS 1.3 reports the refusal at the first read, not at connect.
        with pytest.raises((ssl.SSLError, http.client.HTTPException, OSError)):
            _get(port, context)


def test_client_certificate_optional(pki: Path, start: Callable[[WebConfig], int]) -> None:
    port = start(_tls_config(pki, client_ca_file=str(pki / "ca.crt"), client_auth_type="VerifyClientCertIfGiven"))
    assert _get(port, _client_context(pki)) == (200, BODY)
    assert _get(port, _client_context(pki, cert="client")) == (200, BODY)


def test_a_silent_client_does_not_stall_the_server(pki: Path, start: Callable[[WebConfig], int]) -> None:
    port = start(_tls_config(pki))
    with socket.create_connection(("127.0.0.1", port)):  # connects, never says hello
        time.sleep(0.1)
        began = time.monotonic()
        assert _get(port, _client_context(pki)) == (200, BODY)
        assert time.monotonic() - began < 2


def test_two_tls_servers_keep_their_own_certificates(pki: Path, start: Callable[[WebConfig], int]) -> None:
    first = start(_tls_config(pki))
    second = start(WebConfig(cert_file=str(pki / "other-server.crt"), key_file=str(pki / "other-server.key")))
    assert _get(first, _client_context(pki)) == (200, BODY)
    assert _get(second, _client_context(pki, ca="other-ca")) == (200, BODY)


