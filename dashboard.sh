#!/usr/bin/env bash
# One command: set up, build the demo galleries and their indexes when missing, open the dashboard.
set -euo pipefail
cd "$(dirname "$0")"
scripts/setup.sh
.venv/bin/simx demo
exec .venv/bin/streamlit run app.py "$@"
