#!/usr/bin/env bash
# A shell handler, run the way custom runtimes run bash functions: one call
# of `handler` per event, each spawning a few short processes.
# Usage: shell_handler.sh [EVENTS]
set -euo pipefail

handler() {
    local event="$1"
    local stamp digest words
    stamp=$(date +%s%N)
    digest=$(printf '%s' "$event" | sha1sum | cut -c1-12)
    words=$(printf '%s' "$event" | tr ' ' '\n' | wc -l)
    printf '{"event": %d, "digest": "%s", "words": %d, "at": %s}\n' "$2" "$digest" "$words" "$stamp"
}

events=${1:-20}
for ((i = 1; i <= events; i++)); do
    handler "order $i for customer $((i * 7)) shipped to warehouse $((i % 3))" "$i"
done
