"""Serving /metrics: plain HTTP, or TLS and basic auth from a web config file.

The web config uses the format Prometheus exporters share:

    tls_server_config:
      cert_file: server.crt
      key_file: server.key
      client_ca_file: ca.crt                         # optional
      client_auth_type: RequireAndVerifyClientCert    # with client_ca_file
    basic_auth_users:
      prometheus: $2b$12$...                          # bcrypt hashes only

With TLS on, the socket speaks only TLS: a plaintext request fails. Python
verifies every client certificate it accepts, so the client-certificate modes
need client_ca_file (a client's certificate is never taken unverified).
"""

from __future__ import annotations

import base64
import errno
import hashlib
import socket
import ssl
import threading
from dataclasses import dataclass, field
from pathlib import Path
from socketserver import ThreadingMixIn
from typing import Any, Callable, Iterable, Mapping
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import bcrypt
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from profiler.errors import ConfigError, InputError
from profiler.files import parse_yaml

# A client that connects and never completes its handshake (or request) is
# dropped after this long, so it cannot hold a serving thread forever.
CLIENT_TIMEOUT_SECONDS = 10.0

_CLIENT_AUTH = {"NoClientCert": ssl.CERT_NONE, "RequestClientCert": ssl.CERT_OPTIONAL,
                "RequireAnyClientCert": ssl.CERT_REQUIRED, "VerifyClientCertIfGiven": ssl.CERT_OPTIONAL,
                "RequireAndVerifyClientCert": ssl.CERT_REQUIRED}


_TLS_KEYS = {"cert_file", "key_file", "client_ca_file", "client_auth_type", "min_version", "max_version",
             "cipher_suites", "curve_preferences", "prefer_server_cipher_suites", "client_allowed_sans"}


@dataclass(frozen=True)
class WebConfig:
    cert_file: str | None = None
    key_file: str | None = None
    client_ca_file: str | None = None
    client_auth_type: str = "NoClientCert"
    users: Mapping[str, bytes] = field(default_factory=dict)

    @property
    def tls(self) -> bool:
        return self.cert_file is not None


def load_web_config(path: str | Path | None) -> WebConfig:
    if path is None:
        return WebConfig()
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise ConfigError(f"{path}: cannot read web config: {err.strerror}") from err
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path}: web config is not text (UTF-8): binary content at byte {err.start}") from err
    data = parse_yaml(text, path, "web config")
    data = data or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: web config must be a mapping")
    unknown = sorted(repr(k) for k in data
                     if not isinstance(k, str) or k not in {"tls_server_config", "basic_auth_users",
                                                            "http_server_config"})
    if unknown:
        raise ConfigError(f"{path}: unknown web config key {unknown[0][:60]}")
    tls = data.get("tls_server_config") or {}
    users = data.get("basic_auth_users") or {}
    if not isinstance(tls, dict) or not isinstance(users, dict):
        raise ConfigError(f"{path}: tls_server_config and basic_auth_users must be mappings")
    unknown = sorted(repr(k) for k in tls if not isinstance(k, str) or k not in _TLS_KEYS)
    if unknown:
        raise ConfigError(f"{path}: unknown tls_server_config key {unknown[0][:60]}")
    base = path.parent

    def file_field(key: str) -> str | None:
        value = tls.get(key)
        if value is None:
            return None
        if not isinstance(value, str) or not value or "\0" in value:
            raise ConfigError(f"{path}: tls_server_config.{key} must be a file name")
        resolved = (base / str(value)) if not Path(str(value)).is_absolute() else Path(str(value))
        if not resolved.is_file():
            raise ConfigError(f"{path}: tls_server_config.{key}: no such file {resolved}")
        return str(resolved)

    cert, key, ca = file_field("cert_file"), file_field("key_file"), file_field("client_ca_file")
    if (cert is None) != (key is None):
        raise ConfigError(f"{path}: tls_server_config needs both cert_file and key_file")
    auth_type = tls.get("client_auth_type", "RequireAndVerifyClientCert" if ca else "NoClientCert")
    if not isinstance(auth_type, str) or auth_type not in _CLIENT_AUTH:
        raise ConfigError(f"{path}: tls_server_config.client_auth_type {repr(auth_type)[:60]} is not one of "
                          f"{', '.join(_CLIENT_AUTH)}")
    if auth_type != "NoClientCert" and ca is None:
        # Without a CA every client certificate fails verification: refuse
        # the config rather than every scrape.
        raise ConfigError(f"{path}: tls_server_config.client_auth_type {auth_type} needs client_ca_file")
    if cert is None and ca is not None:
        raise ConfigError(f"{path}: tls_server_config: client certificates need cert_file and key_file")
    hashes: dict[str, bytes] = {}
    for user, hashed in users.items():
        if not isinstance(user, str) or not user or ":" in user:
            raise ConfigError(f"{path}: basic_auth_users: user name {repr(user)[:60]} must be text without ':'")
        if not isinstance(hashed, str) or not hashed.startswith(("$2a$", "$2b$", "$2y$")) or not hashed.isascii():
            raise ConfigError(f"{path}: basic_auth_users.{user[:60]}: not a bcrypt hash")
        hashes[str(user)] = hashed.encode()
    return WebConfig(cert, key, ca, auth_type, hashes)


def _ssl_context(config: WebConfig) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        assert config.cert_file and config.key_file
        context.load_cert_chain(config.cert_file, config.key_file)
        if config.client_ca_file:
            context.load_verify_locations(config.client_ca_file)
    except (ssl.SSLError, OSError) as err:
        raise ConfigError(f"TLS certificate or key unusable: {err}") from err
    context.verify_mode = _CLIENT_AUTH[config.client_auth_type]
    return context


WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


def with_basic_auth(app: WSGIApp, users: Mapping[str, bytes]) -> WSGIApp:
    """Check credentials against bcrypt hashes; 401 otherwise."""
    # bcrypt is slow on purpose: remember the credentials that passed (by
    # digest, not the password itself). Failures are not remembered, so
    # guessing cannot grow the cache.
    accepted: set[tuple[str, bytes]] = set()
    lock = threading.Lock()

    def check(header: str) -> bool:
        if not header.startswith("Basic "):
            return False
        try:
            user, _, password = base64.b64decode(header[6:]).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            return False
        hashed = users.get(user)
        if hashed is None:
            return False
        key = (user, hashlib.sha256(password.encode()).digest())
        with lock:
            if key in accepted:
                return True
        if not bcrypt.checkpw(password.encode(), hashed):
            return False
        with lock:
            accepted.add(key)
        return True

    def guarded(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if check(environ.get("HTTP_AUTHORIZATION", "")):
            return app(environ, start_response)
        start_response("401 Unauthorized", [("WWW-Authenticate", 'Basic realm="fntax"'),
                                            ("Content-Type", "text/plain")])
        return [b"Unauthorized\n"]

    return guarded


class _ThreadingServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True
    allow_reuse_address = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


class _TLSServer(_ThreadingServer):
    # Set per server by serve(): a class-wide context would be shared by
    # every server in the process.
    ssl_context: ssl.SSLContext | None = None

    def get_request(self) -> tuple[socket.socket, Any]:
        sock, addr = super().get_request()
        assert self.ssl_context is not None
        # The handshake waits for the client: done in the accepting thread, one
        # silent client would stall every scrape. It runs in the request's
        # thread (finish_request) instead.
        sock.settimeout(CLIENT_TIMEOUT_SECONDS)
        return self.ssl_context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False), addr

    def finish_request(self, request: Any, client_address: Any) -> None:
        try:
            request.do_handshake()
        except (ssl.SSLError, OSError):
            return  # plaintext clients, bad or missing client certificates, timeouts: refused quietly
        super().finish_request(request, client_address)

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that goes away mid-request is not an error of the agent


def parse_listen(listen: str) -> tuple[str, int]:
    host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise InputError(f"--listen {listen!r}: expected ADDRESS:PORT")
    return host.strip("[]") or "127.0.0.1", int(port)


def metrics_app(body: Callable[[], bytes]) -> WSGIApp:
    """/metrics in the Prometheus text format (0.0.4); 404 elsewhere."""
    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if environ.get("PATH_INFO", "/") not in ("/metrics", "/"):
            start_response("404 Not Found", [("Content-Type", "text/plain")])
            return [b"Not found: try /metrics\n"]
        payload = body()
        start_response("200 OK", [("Content-Type", CONTENT_TYPE_LATEST),
                                  ("Content-Length", str(len(payload)))])
        return [payload]
    return app


def serve(body: Callable[[], bytes], listen: str, config: WebConfig) -> tuple[WSGIServer, threading.Thread]:
    server = bind(body, listen, config)
    return server, start(server)


def bind(body: Callable[[], bytes], listen: str, config: WebConfig) -> WSGIServer:
    """Listen now (a port in use is found before anything slow); serve once started."""
    host, port = parse_listen(listen)
    app: WSGIApp = metrics_app(body)
    if config.users:
        app = with_basic_auth(app, config.users)
    context = _ssl_context(config) if config.tls else None
    server_class = _TLSServer if context is not None else _ThreadingServer
    try:
        server = make_server(host, port, app, server_class, handler_class=_QuietHandler)
    except OSError as err:
        if err.errno == errno.EADDRINUSE:
            raise InputError(f"cannot listen on {host}:{port}: address already in use") from err
        raise InputError(f"cannot listen on {host}:{port}: {err.strerror}") from err
    if isinstance(server, _TLSServer):
        server.ssl_context = context  # before serving starts: no request sees it unset
    return server


def start(server: WSGIServer) -> threading.Thread:
    """Serve a bound server on its own thread (requests that arrived meanwhile waited in the backlog)."""
    thread = threading.Thread(target=server.serve_forever, name="fntax-http", daemon=True)
    thread.start()
    return thread
