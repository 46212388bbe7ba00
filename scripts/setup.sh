#!/usr/bin/env bash
# Set up simx on a fresh Debian/Ubuntu machine with Python 3.11: system packages (when root), a virtual
# environment in .venv, the Python requirements and the package itself. Idempotent and quick when nothing changed.
#   scripts/setup.sh            runtime only (dashboard)
#   scripts/setup.sh --test     plus the test dependencies and Chromium for the browser tests
set -euo pipefail
cd "$(dirname "$0")/.."

want_test=0
[ "${1:-}" = "--test" ] && want_test=1

say() { printf '\033[1m[simx setup]\033[0m %s\n' "$*" >&2; }

# --- system packages: the real demo images (GPL, fetched, never committed) and Chromium for browser tests
apt_pkgs=()
[ -d /usr/share/tuxpaint/stamps ] || apt_pkgs+=(tuxpaint-stamps-default)
if [ "$want_test" = 1 ] && ! command -v chromium >/dev/null 2>&1; then apt_pkgs+=(chromium); fi
# a throw-away PostgreSQL server for the label-store tests (SQLite is the default store; PostgreSQL is optional)
if [ "$want_test" = 1 ] && ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then apt_pkgs+=(postgresql); fi
if [ ${#apt_pkgs[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    say "installing ${apt_pkgs[*]} with apt-get"
    if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${apt_pkgs[@]}"; } >/tmp/simx-apt.log 2>&1; then
      say "apt-get failed (see /tmp/simx-apt.log): the demo falls back to generated images, and ./test.sh will fail the browser, PostgreSQL and real-stamp tests that need these packages"
    fi
  else
    say "not root or no apt-get: skipping ${apt_pkgs[*]} (sudo apt-get install ${apt_pkgs[*]} to get them)."
    say "Without tuxpaint-stamps-default the demo uses generated images. ./test.sh forbids skips, so the tests that"
    say "need chromium, postgresql or the real stamps fail without them (SIMX_NO_SKIPS=0 ./test.sh lets them skip)."
  fi
fi

# --- Python 3.11 virtual environment
py=""
for cand in python3.11 python3; do
  if command -v "$cand" >/dev/null 2>&1 && "$cand" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
    py="$cand"; break
  fi
done
[ -n "$py" ] || { say "Python 3.11 is required (python3.11 not found)"; exit 1; }
[ -x .venv/bin/python ] || { say "creating .venv"; "$py" -m venv .venv; }

req=requirements.txt
[ "$want_test" = 1 ] && req=requirements-test.txt
stamp=".venv/.simx-$(cat requirements.txt "$req" pyproject.toml | sha256sum | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  say "installing Python requirements ($req); the first time takes a few minutes (PyTorch)"
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -r "$req"
  .venv/bin/python -m pip install -q --no-deps --no-build-isolation -e .
  touch "$stamp"
fi
