#!/usr/bin/env bash
# Run the bundled example functions forever, each as a named function: the
# three unpack variants (cold starts that decompress a .tar.gz fetched from a
# loopback server) and the shell handler (per-event child processes).
set -euo pipefail
cd /opt/fntax
PY=.venv/bin/python
DIR=/var/lib/fntax/sample
mkdir -p "$DIR"
rm -f "$DIR/port"
"$PY" examples/serve.py "$DIR" --port-file "$DIR/port" >/dev/null &
server=$!
trap 'kill $server 2>/dev/null || true' EXIT
for _ in $(seq 100); do [ -s "$DIR/port" ] && break; sleep 0.1; done
URL="http://127.0.0.1:$(cat "$DIR/port")/event.tar.gz"
while true; do
    for variant in a_disk b_memory c_stream; do
        AWS_LAMBDA_FUNCTION_NAME="unpack-${variant%%_*}" "$PY" "examples/functions/unpack_${variant}.py" "$URL" >/dev/null
    done
    AWS_LAMBDA_FUNCTION_NAME=shell-handler examples/functions/shell_handler.sh 10 >/dev/null
    sleep 2
done
