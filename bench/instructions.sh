#!/usr/bin/env bash
# User-space instructions per echo reply, counted by callgrind: stable where
# wall-clock A/B runs swing by several percent, and usable on VMs without
# hardware counters (`perf stat -e instructions` needs them).
#
#   bench/instructions.sh [SERVER_BINARY]   (default target/release/ssocket)
#
# Starts the server under callgrind, zeroes the counters once it listens,
# runs 8 s of `ssocket-bench echo` (50 connections x 4 in flight, ~100-byte
# payloads), dumps, and divides the instructions (Ir) by the replies. The
# server runs ~50x slower under callgrind, so expect ~100k replies. Needs
# valgrind (apt-get install valgrind). Kernel work is not counted.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${1:-target/release/ssocket}
GEN=${BENCH_GEN:-target/release/ssocket-bench}
command -v valgrind >/dev/null || { echo "bench/instructions.sh: needs valgrind" >&2; exit 2; }
OUT=$(mktemp -d)
PORT=$((20000 + RANDOM % 10000))
taskset -c 0 valgrind --tool=callgrind --callgrind-out-file="$OUT/cg.%p" "$BIN" --INSECURE.port "$PORT" \
    --INSECURE.hostname 127.0.0.1 --limits.messagesPerSecond 0 --printLogToConsole false >/dev/null 2>"$OUT/valgrind.log" &
VPID=$!
for _ in $(seq 120); do (echo >"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break; sleep 0.5; done
callgrind_control -z "$VPID" >/dev/null 2>&1
REPLIES=$(taskset -c 1 "$GEN" echo --url "ws://127.0.0.1:$PORT/" --connections 50 --in-flight 4 --payload-bytes 100 \
    --duration-secs 8 --warmup-secs 0 --json 2>/dev/null | python3 -c 'import json, sys; print(json.load(sys.stdin)["replies"])')
callgrind_control -d "$VPID" >/dev/null 2>&1
kill -INT "$VPID"
wait "$VPID" 2>/dev/null || true
IR=$(grep -h '^summary:' "$OUT"/cg.*.1 | awk '{s += $2} END {print s}')
echo "$BIN: $REPLIES replies, $IR instructions, $((IR / REPLIES)) per reply (profile: callgrind_annotate --inclusive=yes $(ls "$OUT"/cg.*.1))"
