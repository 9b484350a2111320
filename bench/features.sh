#!/usr/bin/env bash
# Benchmarks of part two's features, each beside its plain counterpart on
# the same server and run (results go to BENCHMARKS.md by hand):
#   - echo vs store_echo (store::incr + the echo reply), C x D pipelined,
#     taking turns RUNS times: replies per server core-second;
#   - POST /api/publish to N connected receivers: publishes per second;
#   - a room send to N members vs a broadcast to N clients, 200 msg/s,
#     taking turns RUNS times: lost, p99, server CPU;
#   - handshakes per second with a JWT verified at connect vs none.
# The server is pinned to CPU 0 and the generator to CPU 1, as in run.sh.
#
# Usage: bench/features.sh   (env: RUNS=3 SECS=10 CONNS=50 DEPTH=4 RECEIVERS=1000
#        PUBLISHERS=4 BENCH_SKIP_BUILD=1 to use what is built)
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
RUNS=${RUNS:-3}
SECS=${SECS:-10}
CONNS=${CONNS:-50}
DEPTH=${DEPTH:-4}
RECEIVERS=${RECEIVERS:-1000}
PUBLISHERS=${PUBLISHERS:-4}
PORT=${PORT:-19400}
KEY=bench-$$
OUT=$ROOT/bench-out/features-$(date -u +%Y%m%dT%H%M%SZ)
mkdir -p "$OUT"
say() { printf '%s\n' "$*" >&2; }

if [ -z "${BENCH_SKIP_BUILD:-}" ]; then
    say "building ssocket and ssocket-bench (release)"
    cargo build --release --bin ssocket --bin ssocket-bench >"$OUT/build.log" 2>&1 || { say "build failed: $OUT/build.log"; exit 1; }
fi
SSOCKET=$ROOT/target/release/ssocket
GEN=$ROOT/target/release/ssocket-bench

SECRET=bench-secret-$$
CWD=$(mktemp -d)   # no config.toml, no INIT.rhai: defaults plus flags
(cd "$CWD" && exec taskset -c 0 "$SSOCKET" --plugsFolder "$ROOT/bench/plugs" \
    --INSECURE.hostname 127.0.0.1 --INSECURE.port "$PORT" --limits.messagesPerSecond 0 \
    --maxConnections 0 --api.key "$KEY" --auth.jwtSecret "$SECRET") >"$OUT/server.log" 2>&1 &
PID=$!
trap 'kill $PID 2>/dev/null; rm -rf "$CWD"' EXIT
for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break; sleep 0.1; done
URL=ws://127.0.0.1:$PORT/

gen() { taskset -c 1 "$GEN" "$@" --json 2>>"$OUT/gen.err" | tail -n 1; }
field() { python3 -c 'import json,sys; print(json.loads(sys.stdin.read()).get(sys.argv[1]))' "$1"; }

say "machine: $(nproc) cores, $(uname -r); commit $(git rev-parse --short HEAD)"
for i in $(seq "$RUNS"); do
    for event in echo store_echo; do
        json=$(gen echo --url "$URL" --event "$event" --connections "$CONNS" --in-flight "$DEPTH" \
            --payload-bytes 100 --duration-secs "$SECS" --warmup-secs 1 --server-pid "$PID")
        echo "$json" >> "$OUT/results.jsonl"
        say "$event run $i: $(echo "$json" | field replies_per_core_second) replies per server core-second, $(echo "$json" | field errors) errors"
    done
done
json=$(gen publish --url "$URL" --key "$KEY" --receivers "$RECEIVERS" --concurrency "$PUBLISHERS" \
    --duration-secs "$SECS" --server-pid "$PID")
echo "$json" >> "$OUT/results.jsonl"
say "publish: $json"
for i in $(seq "$RUNS"); do
    json=$(gen broadcast --url "$URL" --event broadcast --receivers "$RECEIVERS" --rate 200 \
        --duration-secs "$SECS" --payload-bytes 100 --server-pid "$PID")
    echo "$json" | python3 -c 'import json,sys; r=json.load(sys.stdin); r["label"]="broadcast"; print(json.dumps(r))' >> "$OUT/results.jsonl"
    say "broadcast run $i: $json"
    json=$(gen broadcast --url "$URL" --event room_send --join join --receivers "$RECEIVERS" --rate 200 \
        --duration-secs "$SECS" --payload-bytes 100 --server-pid "$PID")
    echo "$json" | python3 -c 'import json,sys; r=json.load(sys.stdin); r["label"]="room"; print(json.dumps(r))' >> "$OUT/results.jsonl"
    say "room run $i: $json"
done
# An HS256 token for the server's secret (python, so no extra tools).
TOKEN=$(python3 - "$SECRET" <<'PY'
import base64, hashlib, hmac, json, sys
b = lambda d: base64.urlsafe_b64encode(d).rstrip(b"=")
head = b(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
body = b(json.dumps({"sub": "bench", "name": "Bench User"}).encode())
sig = b(hmac.new(sys.argv[1].encode(), head + b"." + body, hashlib.sha256).digest())
print((head + b"." + body + b"." + sig).decode())
PY
)
for i in $(seq "$RUNS"); do
    for label in plain jwt; do
        url=$URL
        [ "$label" = jwt ] && url="$URL?token=$TOKEN"
        json=$(gen connect --url "$url" --connections 5000)
        echo "$json" | python3 -c 'import json,sys; r=json.load(sys.stdin); r["label"]=sys.argv[1]; print(json.dumps(r))' "$label" >> "$OUT/results.jsonl"
        say "connect $label run $i: $json"
    done
done
python3 - "$OUT/results.jsonl" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
echo = [r for r in rows if r.get("scenario") == "echo"]  # echo, store_echo, echo, ...
plain = [r["replies_per_core_second"] for r in echo[0::2]]
store = [r["replies_per_core_second"] for r in echo[1::2]]
pm, sm = statistics.median(plain), statistics.median(store)
print(f"| plug | replies per server core-second (median; runs) |")
print(f"|---|---|")
print(f"| echo | {pm:,.0f} ({', '.join(f'{x:,.0f}' for x in plain)}) |")
print(f"| store_echo | {sm:,.0f} ({', '.join(f'{x:,.0f}' for x in store)}) |")
print(f"\nstore_echo / echo = {sm / pm:.3f} ({(1 - sm / pm) * 100:.1f}% below)")
def med(label, key, scenario):
    xs = [r[key] for r in rows if r.get("scenario") == scenario and r.get("label") == label]
    return statistics.median(xs) if xs else float("nan"), xs
print()
print("| fan-out to %s | lost | p50 µs | p99 µs | server cores |" % "members")
print("|---|---|---|---|---|")
for label in ["broadcast", "room"]:
    lost = sum(r["lost"] for r in rows if r.get("label") == label)
    p50, _ = med(label, "latency_p50_us", "broadcast")
    p99, p99s = med(label, "latency_p99_us", "broadcast")
    cpu, cpus = med(label, "cpu_cores", "broadcast")
    print(f"| {label} | {lost} | {p50:,.0f} | {p99:,.0f} ({', '.join(f'{x:,}' for x in p99s)}) | {cpu:.3f} ({', '.join(str(x) for x in cpus)}) |")
print()
print("| connect | handshakes/s (median; runs) | p50 µs | p99 µs |")
print("|---|---|---|---|")
for label in ["plain", "jwt"]:
    hs, hss = med(label, "handshakes_per_sec", "connect")
    p50, _ = med(label, "latency_p50_us", "connect")
    p99, _ = med(label, "latency_p99_us", "connect")
    print(f"| {label} | {hs:,.0f} ({', '.join(f'{x:,.0f}' for x in hss)}) | {p50:,.0f} | {p99:,.0f} |")
for r in rows:
    if r.get("scenario") == "publish":
        print(f"\npublish to {r['receivers']} receivers, {r['concurrency']} HTTP clients: "
              f"{r['publishes_per_sec']:,.0f} publishes/s, {r['delivered']:,} delivered, {r['lost']} lost, "
              f"{r['errors']} errors, request p50 {r['request_p50_us']} µs p99 {r['request_p99_us']} µs, "
              f"fan-out p99 {r['fanout_p99_us']} µs, server {r['cpu_cores']} cores")
PY
say "raw results: $OUT/results.jsonl"
