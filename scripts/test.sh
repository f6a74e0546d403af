#!/usr/bin/env bash
# The test command: set up .venv (or reuse it) and run the whole suite.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup-venv.sh train,dev,hmi,plant
# The HMI's browser tests drive Debian's chromium (never Playwright's own download); without it
# they skip and say so. Installed here when we may (root, apt present).
if ! command -v chromium >/dev/null && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "installing chromium for the HMI's browser tests (log: .venv/apt-chromium.log) ..."
    (apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y chromium) >.venv/apt-chromium.log 2>&1 ||
        echo "apt-get install chromium failed (see .venv/apt-chromium.log): the HMI's browser tests will skip" >&2
fi
# The MQTT tests run against a real mosquitto broker, and skip (saying how to install it) without one.
if ! command -v mosquitto >/dev/null && [ ! -x /usr/sbin/mosquitto ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        echo "installing mosquitto for the MQTT tests ..."
        { apt-get update -qq && apt-get install -y -qq mosquitto; } >/dev/null 2>&1 ||
            echo "could not install mosquitto: the MQTT tests will skip" >&2
    else
        echo "mosquitto is missing (apt-get install -y mosquitto): the MQTT tests will skip" >&2
    fi
fi
exec .venv/bin/python -m pytest -ra "$@"
