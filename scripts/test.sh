#!/usr/bin/env bash
# The test command: set up .venv (or reuse it) and run the whole suite.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup-venv.sh train,dev,plant
exec .venv/bin/python -m pytest -ra "$@"
