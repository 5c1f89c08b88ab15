#!/usr/bin/env bash
# The main job (`make demo`): a well-known function-cost comparison, measured.
#
# Fetch a .tar.gz over HTTP (a local server on loopback) and unpack it three
# ways — A: to disk in small chunks, then unpack; B: all into memory, then
# unpack; C: unpack while downloading — at two memory sizes with the CPU share
# a function platform gives them, plus a bash handler run once per event the
# way custom runtimes do. Prints one side-by-side table and draws it.
set -euo pipefail
cd "$(dirname "$0")/.."
FNTAX=.venv/bin/fntax
PY=.venv/bin/python
OUT=out/demo
REPEAT=${DEMO_REPEAT:-5}
mkdir -p "$OUT"
rm -f "$OUT/port"

"$PY" examples/serve.py "$OUT" --port-file "$OUT/port" >/dev/null &
server=$!
trap 'kill $server 2>/dev/null || true; wait $server 2>/dev/null || true' EXIT
for _ in $(seq 100); do [ -s "$OUT/port" ] && break; sleep 0.1; done
[ -s "$OUT/port" ] || { echo "demo: the HTTP server did not start" >&2; exit 1; }
URL="http://127.0.0.1:$(cat "$OUT/port")/event.tar.gz"

echo "== fntax doctor =="
"$FNTAX" doctor
echo
echo "== fntax calibrate (once per host) =="
"$FNTAX" calibrate -q
echo

captures=()
for memory in 512 1769; do
    for variant in a_disk b_memory c_stream; do
        label="${variant%%_*}-${memory}MB"
        echo "== profiling ${variant} at ${memory} MB (${REPEAT} cold starts, CPU share of ${memory} MB) ==" >&2
        "$FNTAX" profile -q --json "$OUT/$label.json" --repeat "$REPEAT" --warmup 1 \
            --memory-mb "$memory" --cpu-share auto \
            -- "$PY" "examples/functions/unpack_${variant}.py" "$URL" >/dev/null
        captures+=("$OUT/$label.json")
    done
done
echo "== profiling the shell handler (20 events, one bash function call each) ==" >&2
"$FNTAX" profile -q --json "$OUT/shell-128MB.json" --repeat 3 --memory-mb 128 --cpu-share auto \
    -- examples/functions/shell_handler.sh 20 >/dev/null
captures+=("$OUT/shell-128MB.json")

echo "== side by side: duration, tax by category, decompression share, cost per million, baseline =="
"$FNTAX" compare --plot "$OUT/comparison.png" "${captures[@]}"
"$FNTAX" report --plot "$OUT/c-512MB.png" "$OUT/c-512MB.json" >/dev/null 2>&1
echo
echo "captures, plots: $OUT/ (comparison.png, c-512MB.png)"
