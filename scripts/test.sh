#!/usr/bin/env bash
# The test command: set up .venv (or reuse it) and run the whole suite.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup-venv.sh train,dev,plant
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
