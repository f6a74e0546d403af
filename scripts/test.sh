#!/usr/bin/env bash
# The test command: set up .venv (or reuse it) and run the whole suite.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup-venv.sh train,dev,hmi
# The HMI's browser tests drive Debian's chromium (never Playwright's own download); without it
# they skip and say so. Installed here when we may (root, apt present).
if ! command -v chromium >/dev/null && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "installing chromium for the HMI's browser tests (log: .venv/apt-chromium.log) ..."
    (apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y chromium) >.venv/apt-chromium.log 2>&1 ||
        echo "apt-get install chromium failed (see .venv/apt-chromium.log): the HMI's browser tests will skip" >&2
fi
exec .venv/bin/python -m pytest -ra "$@"
