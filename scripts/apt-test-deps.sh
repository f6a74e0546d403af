#!/usr/bin/env bash
# Debian packages the tests talk to for real: chromium (the HMI's browser tests, never
# Playwright's own download) and mosquitto (the MQTT tests). Installed in one apt-get when we
# may (root, apt present); without them those tests skip and say how to install them.
# Usage: scripts/apt-test-deps.sh PACKAGE...   (each package's program has the package's name)
set -uo pipefail
missing=()
for pkg in "$@"; do
    command -v "$pkg" >/dev/null || [ -x "/usr/sbin/$pkg" ] || missing+=("$pkg")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
    echo "missing: ${missing[*]} (apt-get install -y ${missing[*]}): the tests that need them will skip" >&2
    exit 0
fi
log=.venv/apt-test-deps.log
echo "installing ${missing[*]} for the tests (log: $log) ..."
{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"; } >"$log" 2>&1 ||
    echo "apt-get install ${missing[*]} failed (see $log): the tests that need them will skip" >&2
