#!/usr/bin/env bash
# The main job (`make demo`): profile the bundled example function and print
# fntax's report of it.
set -euo pipefail
cd "$(dirname "$0")/.."
FNTAX=.venv/bin/fntax
PY=.venv/bin/python
out=out/demo
mkdir -p "$out"
[ -f "$out/event.tar.gz" ] || "$PY" examples/functions/unpack_handler.py --make-event "$out/event.tar.gz"

echo "== fntax doctor =="
"$FNTAX" doctor || true
echo
echo "== fntax profile: examples/functions/unpack_handler.py (one cold invocation) =="
"$FNTAX" profile --json "$out/unpack.json" -- "$PY" examples/functions/unpack_handler.py "$out/event.tar.gz" >/dev/null
"$FNTAX" report "$out/unpack.json"
echo
echo "capture written to $out/unpack.json"
