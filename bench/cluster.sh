#!/usr/bin/env bash
# Issue 14's benchmark: a broadcast to 1,000 receivers at 200 messages/s,
# on one node (the plain case) and on two nodes sharing a Redis (500
# receivers on each, the sender on the first), taking turns RUNS times:
# lost, fan-out p50/p99, and the CPU of each node and of Redis. Servers and
# Redis on CPU 0, the load generator on CPU 1, as in run.sh.
#
# Usage: bench/cluster.sh   (env: RUNS=3 SECS=10 RECEIVERS=1000 RATE=200
#        BENCH_SKIP_BUILD=1 to use what is built). Needs redis-server.
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
RUNS=${RUNS:-3}
SECS=${SECS:-10}
RECEIVERS=${RECEIVERS:-1000}
RATE=${RATE:-200}
OUT=$ROOT/bench-out/cluster-$(date -u +%Y%m%dT%H%M%SZ)
mkdir -p "$OUT"
say() { printf '%s\n' "$*" >&2; }
command -v redis-server >/dev/null || { say "redis-server is missing (apt-get install redis-server)"; exit 1; }

if [ -z "${BENCH_SKIP_BUILD:-}" ]; then
    say "building ssocket and ssocket-bench (release)"
    cargo build --release --bin ssocket --bin ssocket-bench >"$OUT/build.log" 2>&1 || { say "build failed: $OUT/build.log"; exit 1; }
fi
SSOCKET=$ROOT/target/release/ssocket
GEN=$ROOT/target/release/ssocket-bench
CWD=$(mktemp -d)   # no config.toml, no INIT.rhai
PIDS=()
cleanup() { kill "${PIDS[@]}" 2>/dev/null; rm -rf "$CWD"; }
trap cleanup EXIT

REDIS_PORT=19510
taskset -c 0 redis-server --port "$REDIS_PORT" --save '' --appendonly no --logfile "$OUT/redis.log" &
REDIS_PID=$!
PIDS+=("$REDIS_PID")
# node NAME PORT [ARGS...]: start ssocket on CPU 0; prints its pid.
node() {
    local name=$1 port=$2
    shift 2
    (cd "$CWD" && exec taskset -c 0 "$SSOCKET" --plugsFolder "$ROOT/bench/plugs" --INSECURE.hostname 127.0.0.1 \
        --INSECURE.port "$port" --limits.messagesPerSecond 0 --maxConnections 0 "$@") >"$OUT/$name.log" 2>&1 &
    echo $!
}
SINGLE=$(node single 19511)
A=$(node node-a 19512 --cluster.redis "redis://127.0.0.1:$REDIS_PORT")
B=$(node node-b 19513 --cluster.redis "redis://127.0.0.1:$REDIS_PORT")
PIDS+=("$SINGLE" "$A" "$B")
for port in 19511 19512 19513; do
    for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.1; done
done
sleep 1 # the nodes' first heartbeats

gen() { taskset -c 1 "$GEN" "$@" --json 2>>"$OUT/gen.err" | tail -n 1; }
say "machine: $(nproc) cores, $(uname -r); commit $(git rev-parse --short HEAD); $(redis-server --version | cut -d' ' -f3)"
for i in $(seq "$RUNS"); do
    json=$(gen broadcast --url ws://127.0.0.1:19511/ --receivers "$RECEIVERS" --rate "$RATE" --duration-secs "$SECS" \
        --payload-bytes 100 --server-pid "$SINGLE")
    echo "$json" | python3 -c 'import json,sys; r=json.load(sys.stdin); r["label"]="one node"; print(json.dumps(r))' >> "$OUT/results.jsonl"
    say "one node, run $i: $json"
    json=$(gen broadcast --url ws://127.0.0.1:19512/ --receivers-on ws://127.0.0.1:19512/,ws://127.0.0.1:19513/ \
        --receivers "$RECEIVERS" --rate "$RATE" --duration-secs "$SECS" --payload-bytes 100 --server-pid "$A" \
        --also-pids "$B,$REDIS_PID")
    echo "$json" | python3 -c 'import json,sys; r=json.load(sys.stdin); r["label"]="two nodes"; print(json.dumps(r))' >> "$OUT/results.jsonl"
    say "two nodes, run $i: $json"
done
python3 - "$OUT/results.jsonl" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
def runs(label, key):
    return [r[key] for r in rows if r.get("label") == label and key in r]
print("| setup | lost | p50 µs (median) | p99 µs (median; runs) | CPU: node A | node B | Redis |")
print("|---|---|---|---|---|---|---|")
for label in ["one node", "two nodes"]:
    lost = sum(runs(label, "lost"))
    sent = sum(runs(label, "sent")) * (rows[0].get("receivers") or 1)
    p50 = statistics.median(runs(label, "latency_p50_us"))
    p99s = runs(label, "latency_p99_us")
    a = runs(label, "cpu_cores")
    also = runs(label, "also_cpu_cores")
    b = [x[0] for x in also if x] if label == "two nodes" else []
    redis = [x[1] for x in also if len(x) > 1] if label == "two nodes" else []
    fmt = lambda xs: f"{statistics.median(xs):.3f} ({', '.join(str(x) for x in xs)})" if xs else "-"
    print(f"| {label} | {lost} of {sent:,} | {p50:,.0f} | {statistics.median(p99s):,.0f} ({', '.join(f'{x:,}' for x in p99s)}) | {fmt(a)} | {fmt(b)} | {fmt(redis)} |")
PY
say "raw results: $OUT/results.jsonl"
