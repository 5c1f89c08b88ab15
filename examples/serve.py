"""A tiny HTTP server on loopback serving the demo's event payload.

Usage: serve.py DIR [--port-file FILE]

Generates DIR/event.tar.gz when missing, serves DIR on 127.0.0.1 on a free
port (written to --port-file, and printed), and stops cleanly on SIGTERM.
"""

from __future__ import annotations

import argparse
import functools
import http.server
import signal
import sys
import threading
from pathlib import Path
from types import FrameType

sys.path.insert(0, str(Path(__file__).resolve().parent / "functions"))
from unpack_handler import make_event  # noqa: E402


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


class QuietServer(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: object, client_address: object) -> None:
        pass  # a client that hangs up early is no news


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("directory", type=Path)
    parser.add_argument("--port-file", type=Path)
    args = parser.parse_args()
    args.directory.mkdir(parents=True, exist_ok=True)
    payload = args.directory / "event.tar.gz"
    if not payload.exists():
        make_event(str(payload))
    handler = functools.partial(QuietHandler, directory=str(args.directory))
    server = QuietServer(("127.0.0.1", 0), handler)
    port = server.server_address[1]

    def stop(_signum: int, _frame: FrameType | None) -> None:
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    if args.port_file:
        tmp = args.port_file.with_suffix(".tmp")
        tmp.write_text(str(port))
        tmp.replace(args.port_file)
    print(f"serving {args.directory} on http://127.0.0.1:{port}/", flush=True)
    server.serve_forever()
    server.server_close()


if __name__ == "__main__":
    main()
