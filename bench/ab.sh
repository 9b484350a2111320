#!/usr/bin/env bash
# A/B of two server binaries on the echo load, taking turns, so a stretch
# of noise on a shared machine hits both: the way BENCHMARKS.md's hot-path
# rows were measured.
#
#   bench/ab.sh OLD_BINARY NEW_BINARY [PAIRS]
#
# Each run: a fresh server on CPU 0 (the repo's plugs, no rate limit), then
# `ssocket-bench echo` (50 connections x 4 in flight, ~100-byte payloads,
# 5 s) on CPU 1. Prints replies per server core-second and p99 per run.
# Build the binaries first, e.g. `cargo build --release` and a copy of
# target/release/ssocket from before the change.
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -ge 2 ] || { echo "usage: bench/ab.sh OLD_BINARY NEW_BINARY [PAIRS]" >&2; exit 2; }
OLD=$1 NEW=$2 PAIRS=${3:-3}
GEN=${BENCH_GEN:-target/release/ssocket-bench}
for bin in "$OLD" "$NEW" "$GEN"; do
    [ -x "$bin" ] || { echo "bench/ab.sh: $bin is not an executable" >&2; exit 2; }
done

run() {
    local bin=$1 port=$((20000 + RANDOM % 10000)) pid out
    taskset -c 0 "$bin" --INSECURE.port "$port" --INSECURE.hostname 127.0.0.1 \
        --limits.messagesPerSecond 0 --printLogToConsole false >/dev/null 2>&1 &
    pid=$!
    for _ in $(seq 50); do (echo >"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.1; done
    out=$(taskset -c 1 "$GEN" echo --url "ws://127.0.0.1:$port/" --connections 50 --in-flight 4 \
        --payload-bytes 100 --duration-secs 5 --server-pid "$pid" --json 2>/dev/null || true)
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    printf '%s\n' "$out" | python3 -c '
import json, sys
line = sys.stdin.read().strip()
if not line:
    print("failed"); sys.exit()
d = json.loads(line)
rate, p99, errors = d["replies_per_core_second"], d["latency_p99_us"], d["errors"]
print(f"{rate:>10,.0f} replies per core-second, p99 {p99} µs, {errors} errors")'
}

for i in $(seq "$PAIRS"); do
    echo "pair $i  old: $(run "$OLD")"
    echo "pair $i  new: $(run "$NEW")"
done
