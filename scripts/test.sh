#!/usr/bin/env bash
# The test command: set up .venv (or reuse it), lint and type-check, run the whole suite.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup-venv.sh train,dev,hmi,plant
./scripts/apt-test-deps.sh chromium mosquitto
./scripts/check.sh
exec .venv/bin/python -m pytest -ra "$@"
