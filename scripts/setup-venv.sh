#!/usr/bin/env bash
# Create (or reuse) .venv in the repo root and install the project with the given extras.
# Usage: scripts/setup-venv.sh [EXTRAS]   e.g. "train,dev"
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-train,dev}"
py="${PYTHON:-python3.11}"
command -v "$py" >/dev/null || py=python3
[ -x .venv/bin/python ] || "$py" -m venv .venv
# torch 2.14.1 + torchvision 0.29.1: the versions this project is tested with.
log=.venv/pip-install.log
echo "installing edge-inspect[${extras}] into .venv (log: $log) ..."
if ! .venv/bin/python -m pip install --disable-pip-version-check -e ".[${extras}]" \
        "torch==2.14.1" "torchvision==0.29.1" >"$log" 2>&1; then
    grep -v "is ignored: it is neither a file nor a directory" "$log" | tail -40
    echo "pip install failed (full log: $log)" >&2
    exit 1
fi
