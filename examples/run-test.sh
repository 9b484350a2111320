#!/usr/bin/env bash
# Browser tests of the example apps (examples/chat, examples/dashboard):
# installs Debian's chromium if /usr/bin/chromium is missing, playwright-core
# from npm (in clients/playground, whose package.json lists it), builds the
# server unless TEST_SERVER_BIN is set, then runs examples/test/*.test.mjs
# with the Node test runner (Node 20+; the tests need no WebSocket in Node). Each test starts the server in its example's
# folder with that folder's config.toml, as the examples' READMEs do.
# Needs: Debian (apt-get; root or sudo to install chromium), the Rust
# toolchain, Node 20+. Environment: TEST_SERVER_BIN (use this server binary,
# no build), CHROMIUM_PATH (use this browser, no apt-get). (Not SSOCKET_*:
# the server reads every SSOCKET_* variable as a configuration key.)
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/.." && pwd)"

# shellcheck source=../scripts/browser-deps.sh
source "$root/scripts/browser-deps.sh"
browser_deps "$root"

if [ -z "${TEST_SERVER_BIN:-}" ]; then
  (cd "$root" && cargo build --release --quiet)
  export TEST_SERVER_BIN="$root/target/release/ssocket"
fi

# The test files by name (the shell expands the pattern): Node 21+ no longer
# searches a directory argument (`node --test examples/test/` fails there).
cd "$root"
exec node --test examples/test/*.test.mjs
