# Sourced by the browser tests' run-test.sh scripts (clients/playground,
# examples): installs Debian's chromium when /usr/bin/chromium is missing
# and CHROMIUM_PATH is not set (apt-get; root or sudo), and playwright-core
# from npm into clients/playground (whose package.json lists it; the
# examples' tests import it from there).
browser_deps() {
  local root="$1"
  if [ -z "${CHROMIUM_PATH:-}" ] && [ ! -x /usr/bin/chromium ]; then
    echo "run-test: installing chromium (apt-get)" >&2
    local sudo="" aptlog
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    aptlog="$(mktemp)"
    if ! { $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq chromium; } >"$aptlog" 2>&1; then
      cat "$aptlog" >&2
      echo "run-test: could not install chromium" >&2
      return 1
    fi
    rm -f "$aptlog"
  fi
  echo "run-test: npm install (playwright-core, in clients/playground)" >&2
  (cd "$root/clients/playground" && npm install --no-audit --no-fund --loglevel=error >/dev/null)
}
