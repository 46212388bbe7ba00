#!/usr/bin/env bash
# One command: set up (test dependencies included) and run the whole test suite. Any skipped test fails the run
# (SIMX_NO_SKIPS=1): set-up installs everything the tests need, so a skip would hide a broken set-up. -rs lists
# the reason of any skip in the log all the same.
set -euo pipefail
cd "$(dirname "$0")"
scripts/setup.sh --test
export SIMX_NO_SKIPS="${SIMX_NO_SKIPS:-1}"
exec .venv/bin/python -m pytest -n 2 --dist loadfile -q -rs "$@"
