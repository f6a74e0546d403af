#!/usr/bin/env bash
# The main job end to end on an embedded default: synthetic parts → PatchCore bundle →
# calibration → edge-run on a video → verdicts over ZeroMQ. No download, no GPU.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup-venv.sh train
exec .venv/bin/edge-demo "$@"
