#!/usr/bin/env bash
# Browser test of the playground page (/ on the server): installs Debian's
# chromium if /usr/bin/chromium is missing, playwright-core from npm, builds
# the server, then runs test/playground.test.mjs with the Node test runner.
# Needs: Debian (apt-get; root or sudo to install chromium), the Rust
# toolchain, Node 20+. (Not SSOCKET_*: the server reads every SSOCKET_*
# variable as a configuration key and refuses unknown ones.) Environment: TEST_SERVER_BIN (use this server binary, no
# build), CHROMIUM_PATH (use this browser, no apt-get).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"

# shellcheck source=../../scripts/browser-deps.sh
source "$root/scripts/browser-deps.sh"
browser_deps "$root"

if [ -z "${TEST_SERVER_BIN:-}" ]; then
  # Always build: the page is compiled into the binary (include_str!).
  (cd "$root" && cargo build --release --quiet)
fi

# Node 20 needs the flag for the global WebSocket; newer Node has it built in.
flags=()
node -e 'process.exit(typeof WebSocket === "function" ? 0 : 1)' 2>/dev/null || flags=(--experimental-websocket)
cd "$here"
exec node "${flags[@]}" --test test/*.test.mjs
