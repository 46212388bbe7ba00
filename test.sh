#!/usr/bin/env bash
# One command: set up (test dependencies included) and run the whole test suite.
set -euo pipefail
cd "$(dirname "$0")"
scripts/setup.sh --test
exec .venv/bin/python -m pytest -n 2 --dist loadfile -q "$@"
