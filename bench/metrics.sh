#!/usr/bin/env bash
# What counting for /metrics costs the echo path: the same commit built
# twice, with the hot path's counting (messages by plug, replies by type,
# plug run-time histograms) compiled in and compiled out
# (`--cfg ssocket_metrics_off`), then bench/ab.sh taking turns between them
# and, when valgrind is there, bench/instructions.sh on each.
#
#   bench/metrics.sh [PAIRS]      (default 8)
set -euo pipefail
cd "$(dirname "$0")/.."
PAIRS=${1:-8}
cargo build --release --bin ssocket --bin ssocket-bench
RUSTFLAGS="--cfg ssocket_metrics_off" CARGO_TARGET_DIR=target/metrics-off cargo build --release --bin ssocket
OFF=target/metrics-off/release/ssocket ON=target/release/ssocket
echo "== replies per server core-second: old = counting compiled out, new = counting on"
bench/ab.sh "$OFF" "$ON" "$PAIRS"
if command -v valgrind >/dev/null; then
    echo "== instructions per reply"
    bench/instructions.sh "$OFF"
    bench/instructions.sh "$ON"
fi
